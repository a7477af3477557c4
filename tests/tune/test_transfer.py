"""The warm start from whole studies: proposals from similar tasks' studies help, a misleading one costs little, and
every trial says which study shaped it; the source studies are read from the cloud."""
from __future__ import annotations

import json

import numpy as np
import optuna
import pytest

from tfp_mlflow.cloud.schema import TUNING_EXPERIMENT, Artifact, Kind, Tag
from tfp_mlflow.recommendation import RankedTask, Recommendation
from tfp_mlflow.testing.memory import memory_cloud
from tfp_mlflow.tune.transfer import SourceStudy, StudyTransferSampler, source_studies

KINDS = ["a", "b", "c", "d"]


def target(trial: optuna.Trial) -> float:
    """Best at x = 0.8 with kind a; worst near x = 0 with kind d."""
    x = trial.suggest_float("x", 0.0, 1.0)
    kind = trial.suggest_categorical("kind", KINDS)
    return 1.0 - 4 * (x - 0.8) ** 2 - 0.1 * KINDS.index(kind)


def study_of(best_x: float, best_kind: str, seed: int = 0) -> SourceStudy:
    """A finished source study of 20 trials around its own optimum."""
    rng = np.random.default_rng(seed)
    trials = []
    for _ in range(20):
        x = float(np.clip(best_x + rng.normal(0, 0.2), 0, 1))
        kind = best_kind if rng.random() < 0.6 else KINDS[int(rng.integers(4))]
        trials.append(({"x": x, "kind": kind}, -abs(x - best_x) - 0.2 * (kind != best_kind)))
    return SourceStudy("source", "source-study", 1.0, tuple(sorted(trials, key=lambda t: -t[1])))


def best_after(sampler: optuna.samplers.BaseSampler, trials: int) -> list[float]:
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(target, n_trials=trials)
    return list(np.maximum.accumulate([t.value for t in study.trials]))


@pytest.fixture(autouse=True)
def quiet():
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def test_a_similar_tasks_study_reaches_a_good_configuration_sooner():
    seeds = range(8)
    cold = [best_after(optuna.samplers.TPESampler(seed=s), 12) for s in seeds]
    warm = [best_after(StudyTransferSampler([study_of(0.8, "a", s)], seed=s), 12) for s in seeds]
    # After three trials the transferred study is ahead on average, and it never ends worse.
    assert np.mean([c[2] for c in warm]) > np.mean([c[2] for c in cold]) + 0.1
    assert np.mean([c[-1] for c in warm]) >= np.mean([c[-1] for c in cold])


def test_a_misleading_study_costs_a_few_trials_not_the_search():
    seeds = range(10)
    misleading = [study_of(0.02, "d", s) for s in seeds]          # its best region is the target's worst
    cold = [best_after(optuna.samplers.TPESampler(seed=s), 15)[-1] for s in seeds]
    misled = [best_after(StudyTransferSampler([m], seed=s), 15)[-1] for s, m in zip(seeds, misleading)]
    # Without the decay, the judging against the study's own trials and the down-weighting, the same source keeps
    # the search in its poor region: the test tells the two apart.
    stubborn = [best_after(StudyTransferSampler([m], seed=s, prior_trials=1e9, penalty=1.0, quantile=1.0, share=1.0),
                           15)[-1] for s, m in zip(seeds, misleading)]
    assert np.mean(misled) >= np.mean(cold) - 0.02
    assert np.mean(stubborn) < np.mean(cold) - 0.1


def test_each_trial_says_which_study_shaped_it_and_an_enqueued_one_keeps_its_own():
    sampler = StudyTransferSampler([study_of(0.8, "a")], seed=3)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial({"x": 0.5, "kind": "b"})
    study.optimize(target, n_trials=6)
    assert sampler.origin(0) is None and study.trials[0].params == {"x": 0.5, "kind": "b"}
    shaped = [t.number for t in study.trials if sampler.origin(t.number)]
    assert shaped and sampler.origin(shaped[0]) == {"task": "source", "study": "source-study", "weight": 1.0}
    own = [params for params, _ in study_of(0.8, "a").trials]       # proposals are the source's configurations
    assert all(study.trials[n].params in own for n in shaped)


def _record_study(cloud, task: str, values: list[float], name: str, writer: str | None = None) -> None:
    trials = [{"number": i, "state": "COMPLETE", "value": v, "params": {"x": v / 2, "kind": "a"}, "user_attrs": {}}
              for i, v in enumerate(values)] + [{"number": 99, "state": "FAIL", "value": None, "params": {}}]
    tags = {Tag.TASK: task, Tag.STUDY: name, **({Tag.MLFLOW_USER: writer} if writer else {})}
    with cloud.record(Kind.STUDY, tags, experiment=TUNING_EXPERIMENT) as run:
        run.log_file(Artifact.STUDY, lambda p: p.write_text(json.dumps({"study_name": name, "trials": trials})))


def test_source_studies_are_read_from_the_cloud_nearest_first(tmp_path):
    cloud = memory_cloud(tmp_path / "cache")
    _record_study(cloud, "near", [0.2, 0.9, 0.5], "tune-near")
    _record_study(cloud, "far", [0.4], "tune-far")
    _record_study(cloud, "new", [0.99], "tune-new")                       # the target's own: never a source
    found = source_studies(cloud, _ranking(cloud, ["new", "near", "nothing", "far"]), target="new")
    assert [(s.task, s.study) for s in found] == [("near", "tune-near"), ("far", "tune-far")]
    assert [s.weight for s in found] == pytest.approx([(1 / 2) / (1 / 2 + 1 / 4), (1 / 4) / (1 / 2 + 1 / 4)])
    assert [v for _, v in found[0].trials] == [0.9, 0.5, 0.2]             # finished trials only, best first


def _ranking(cloud, names: list[str], trusted: list[str] | None = None) -> Recommendation:
    """A recommendation ranking ``names`` in order, each task contributed by this process's account."""
    from tfp_mlflow.cloud.records import contributor

    ranking = [RankedTask(rank=i, source=name, distance=float(i), contributor=contributor())
               for i, name in enumerate(names, start=1)]
    return Recommendation(target={"name": "new"}, selector="manual", top_k=3, metric="balanced_accuracy",
                          cloud=cloud.uri, ranking=ranking, scenarios={}, notes=[], trusted=trusted)


def test_only_studies_the_query_trusts_shape_the_warm_start(tmp_path):
    cloud = memory_cloud(tmp_path / "cache")
    _record_study(cloud, "near", [0.6, 0.7], "tune-near")
    # Another account's study of the same task: more trials, all better; it is not the task owner's evidence.
    _record_study(cloud, "near", [0.99] * 5, "tune-near-forged", writer="attacker")
    _record_study(cloud, "far", [0.95] * 3, "tune-far-forged", writer="attacker")
    by_default = source_studies(cloud, _ranking(cloud, ["near", "far"]), target="new")
    assert [(s.task, s.study) for s in by_default] == [("near", "tune-near")]
    trusting = source_studies(cloud, _ranking(cloud, ["near", "far"], trusted=["attacker"]), target="new")
    assert [(s.task, s.study) for s in trusting] == [("near", "tune-near-forged"), ("far", "tune-far-forged")]


def test_a_server_cloud_keeps_its_studies_in_itself_and_a_sqlite_one_beside_it(tmp_path):
    from tfp_mlflow.cloud import Cloud
    from tfp_mlflow.testing.stores import sqlite_uri
    from tfp_mlflow.workflows.tuning import default_storage

    assert default_storage(Cloud("http://127.0.0.1:9", cache_dir=tmp_path / "cache")) == "mlflow"
    beside = default_storage(Cloud(sqlite_uri(tmp_path / "cloud" / "mlflow.db"), cache_dir=tmp_path / "cache"))
    assert beside == f"sqlite:///{(tmp_path / 'cloud' / 'optuna.db').resolve()}"
