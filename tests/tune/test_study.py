"""`tfp tune`: warm start from the recommender, RDB storage shared by workers, nested MLflow runs, best to the cloud."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import optuna
import pytest

from tfp_mlflow import BadInputError
from tfp_mlflow.cloud import Cloud, Knowledge, KnowledgeKind, KnowledgeRow
from tfp_mlflow.cloud.schema import TUNING_EXPERIMENT
from tfp_mlflow.demo.tasks import DemoTask
from tfp_mlflow.recommend import recommend
from tfp_mlflow.reference import Reference, bundled_reference
from tfp_mlflow.testing.stores import sqlite_uri
from tfp_mlflow.train import TrainConfig
from tfp_mlflow.tune import NO_POLICY, SearchSpace, StudyPlan, enqueue_warm_start, run_study, warm_start_suggestions
from tfp_mlflow.tune.study import cloud_policies, retried_from

pytestmark = [pytest.mark.slow, pytest.mark.torch]
KEYWORDS = ["fundus_photography", "eye", "retina"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    target = DemoTask("fundus_new", "fundus", num_classes=2, num_images=30, image_size=40, seed=5).write(
        root / "fundus_new")
    study = Reference.load(bundled_reference(root / "reference"))
    (task, rep), path = sorted(study.policy_files().items())[0]
    policy_id = f"{task}-rep{rep}"
    cloud = Cloud(sqlite_uri(root / 'cloud' / 'mlflow.db'))
    cloud.contribute(None, name="fundus_known", keywords=KEYWORDS, num_images=100, num_classes=2, knowledge=[
        Knowledge("fundus_known", KnowledgeKind.ARCHITECTURE,
                  (KnowledgeRow(architecture="tf_efficientnet_lite0", balanced_accuracy=0.8),)),
        Knowledge("fundus_known", KnowledgeKind.POLICY, (KnowledgeRow(policy_id=policy_id),),
                  policies={policy_id: json.loads(path.read_text())})])
    rec = recommend(cloud, keywords=KEYWORDS, name="fundus_new", selector="manual", top_k=1).to_json()
    space = SearchSpace(architectures=("tf_efficientnet_lite0",), policies=(NO_POLICY, policy_id),
                        lr=(1e-4, 1e-2), truncate=(None, 2), epochs=1)
    base = TrainConfig(target=str(target), image_size=32, batch_size=16)
    return {"root": root, "cloud": cloud, "recommendation": rec, "space": space, "base": base,
            "policy_id": policy_id}


def test_warm_start_enqueues_exactly_the_recommended_configuration_with_provenance(setup):
    suggestions = warm_start_suggestions(setup["recommendation"], setup["space"], top_k=3)
    assert len(suggestions) == 1
    params, attrs = suggestions[0]["params"], suggestions[0]["user_attrs"]
    assert params["architecture"] == "tf_efficientnet_lite0" and params["policy"] == setup["policy_id"]
    assert attrs["architecture_source"] == "fundus_known" and attrs["policy_source"] == "fundus_known"
    assert attrs["selector"] == "manual" and attrs["rank"] == 1 and attrs["architecture_distance"] is not None
    study = optuna.create_study(direction="maximize")
    enqueue_warm_start(study, suggestions, setup["space"])
    trial = study.ask()
    assert setup["space"].suggest(trial) == params and trial.user_attrs["policy_source"] == "fundus_known"


def test_out_of_space_suggestion_is_an_error_or_an_explicit_widening(setup):
    suggestion = warm_start_suggestions(setup["recommendation"], setup["space"], top_k=1)
    suggestion[0]["params"]["architecture"] = "resnet18"
    study = optuna.create_study(direction="maximize")
    with pytest.raises(BadInputError, match="outside the search space: architecture 'resnet18'.*--widen"):
        enqueue_warm_start(study, suggestion, setup["space"])
    assert not study.trials
    wider = enqueue_warm_start(study, suggestion, setup["space"], widen=True)
    assert "resnet18" in wider.architectures and not wider.violations(suggestion[0]["params"])


def test_space_file_is_validated(tmp_path):
    bad = tmp_path / "space.yaml"
    bad.write_text("architectures: [resnet18]\nlearning_rate: [1, 2]\n")
    with pytest.raises(BadInputError, match="unknown key 'learning_rate'"):
        SearchSpace.load(bad, default_architectures=["x"], default_policies=[])
    bad.write_text("lr: [0.1, 0.01]\n")
    with pytest.raises(BadInputError, match="0 < low <= high"):
        SearchSpace.load(bad, default_architectures=["x"], default_policies=[])


def test_study_runs_trials_as_nested_runs_and_contributes_the_best(setup):
    cloud, storage = setup["cloud"], f"sqlite:///{setup['root'] / 'optuna.db'}"
    result = run_study(setup["base"], cloud, setup["space"], StudyPlan("warm", storage, n_trials=3, top_k=1),
                       recommendation=setup["recommendation"])
    study = optuna.load_study(study_name="warm", storage=storage)
    first = study.trials[0]
    assert first.user_attrs["warm_start"] and first.params["policy"] == setup["policy_id"]   # enqueued first
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 3 and result.best_value == study.best_value
    experiment = cloud.client.get_experiment_by_name(TUNING_EXPERIMENT)
    children = cloud.client.search_runs([experiment.experiment_id],
                                        filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert sorted(r.info.run_id for r in children) == sorted(t.user_attrs["run_id"] for t in study.trials)
    child = cloud.client.get_run(first.user_attrs["run_id"])
    assert child.data.params["policy_id"] == setup["policy_id"]
    assert child.data.params["recommendation_policy_source"] == "fundus_known"
    artifacts = {a.path for a in cloud.client.list_artifacts(result.parent_run_id, "plots")}
    assert "plots/optimization_history.png" in artifacts
    best = [k for k in cloud.knowledge("fundus_new", ["architecture"]) if k.run_id in result.knowledge_runs]
    assert best and best[0].rows[0].evidence_run == result.best_run_id
    assert best[0].rows[0].balanced_accuracy == pytest.approx(result.best_value)
    assert "None" not in best[0].provenance and "best trial" in best[0].provenance      # read on the task page


def storage_of(backend: str, tmp_path, request, name: str) -> str:
    """The --storage of a backend: an RDB URL, or the cloud's own MLflow store."""
    if backend == "mlflow":
        return "mlflow"
    return (f"sqlite:///{tmp_path / name}.db" if backend == "sqlite" else
            request.getfixturevalue("postgres").create_database(f"optuna_{name}"))


def trials_of(name: str, storage: str, cloud: Cloud) -> list[optuna.trial.FrozenTrial]:
    """A study's trials by number (MLflow's store lists them newest first)."""
    from tfp_mlflow.cloud.studies import MLFLOW_STORAGE, mlflow_storage

    opened = mlflow_storage(cloud) if storage == MLFLOW_STORAGE else storage
    return sorted(optuna.load_study(study_name=name, storage=opened).trials, key=lambda t: t.number)


BACKENDS = ["sqlite", "mlflow", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_workers_share_one_study_without_losing_or_repeating_trials(setup, tmp_path, backend, request):
    storage = storage_of(backend, tmp_path, request, "shared")
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"architectures": ["tf_efficientnet_lite0"], "policies": ["none"], "epochs": 1}))
    command = [sys.executable, "-m", "tfp_mlflow.cli", "tune", setup["base"].target, "--study", "shared",
               "--storage", storage, "--n-trials", "4", "--space", str(space), "--no-warm-start",
               "--image-size", "32", "--tracking-uri", setup["cloud"].uri, "--json", "-"]
    workers = [subprocess.Popen(command + ["--seed", str(seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=tmp_path) for seed in (1, 2)]
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err.decode()[-2000:]
    trials = trials_of("shared", storage, setup["cloud"])
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert all(t.state.is_finished() for t in trials)                 # none left running
    assert 4 <= len([t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]) <= 5
    runs = {t.user_attrs["run_id"] for t in trials}
    assert len(runs) == len(trials)                                   # one nested run per trial


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_worker_killed_mid_trial_fails_that_trial_and_the_study_goes_on(setup, tmp_path, backend, request):
    """SIGKILL a worker while a trial trains: the next worker fails the trial (heartbeats), fails its MLflow run,
    retries its configuration once, and the study finishes with exactly n_trials counted trials."""
    import signal
    import time

    storage = storage_of(backend, tmp_path, request, "crash")
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"architectures": ["tf_efficientnet_lite0"], "policies": ["none"], "epochs": 3}))
    command = [sys.executable, "-m", "tfp_mlflow.cli", "tune", setup["base"].target, "--study", "crash",
               "--storage", storage, "--n-trials", "2", "--space", str(space), "--no-warm-start", "--heartbeat", "1",
               "--image-size", "32", "--tracking-uri", setup["cloud"].uri, "--no-contribute", "--json", "-"]
    victim = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline, killed = time.monotonic() + 300, None
    while killed is None and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.2)
        try:
            trials = trials_of("crash", storage, setup["cloud"])
        except KeyError:
            continue    # not created yet
        training = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING and "run_id" in t.user_attrs]
        if training:
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            killed = training[0]
    assert killed is not None, f"the worker never reached a training trial: {victim.stderr.read().decode()[-2000:]}"
    time.sleep(3)       # three heartbeats missed
    survivor = subprocess.run(command + ["--seed", "1"], capture_output=True, timeout=600, cwd=tmp_path)
    assert survivor.returncode == 0, survivor.stderr.decode()[-2000:]
    trials = trials_of("crash", storage, setup["cloud"])
    lost = trials[killed.number]
    assert lost.state == optuna.trial.TrialState.FAIL
    counted = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(counted) == 2 and all(t.state.is_finished() for t in trials)     # nothing left running or doubled
    retried = [t for t in trials if retried_from(t) == killed.number]
    assert len(retried) == 1 and retried[0].params == lost.params and retried[0].state.name == "COMPLETE"
    assert len({t.user_attrs["run_id"] for t in trials}) == len(trials)         # one MLflow run per trial
    run = setup["cloud"].client.get_run(lost.user_attrs["run_id"])
    assert run.info.status == "FAILED" and "heartbeats" in run.data.tags["tfp.failed"]
    payload = json.loads(survivor.stdout)
    assert payload["best_run_id"] != lost.user_attrs["run_id"]


def test_warm_start_reuses_the_numbers_of_the_run_that_measured_the_architecture(setup):
    recommendation = json.loads(json.dumps(setup["recommendation"]))
    item = recommendation["scenarios"]["architecture"]["items"][0]
    item["evidence"]["training_run"] = "run-a"
    inside = {"run-a": {"lr": "0.003", "weight_decay": "1e-05", "truncation": "2"}}
    params = warm_start_suggestions(recommendation, setup["space"], 1, inside)[0]["params"]
    assert (params["lr"], params["weight_decay"], params["truncate"]) == (0.003, 1e-05, 2)
    outside = {"run-a": {"lr": "0.5", "weight_decay": "x", "truncation": "7"}}
    suggestion = warm_start_suggestions(recommendation, setup["space"], 1, outside)[0]
    assert suggestion["params"]["lr"] == pytest.approx(1e-3) and suggestion["params"]["truncate"] is None
    assert not setup["space"].violations(suggestion["params"])
    searched = dataclasses.replace(setup["space"], epochs=(2, 4, 6), image_size=(32, 48))
    inside["run-a"].update(epochs="4", image_size="48")
    params = warm_start_suggestions(recommendation, searched, 1, inside)[0]["params"]
    assert (params["epochs"], params["image_size"]) == (4, 48)
    outside["run-a"].update(epochs="5", image_size="x")   # outside the choices: the middle one
    params = warm_start_suggestions(recommendation, searched, 1, outside)[0]["params"]
    assert (params["epochs"], params["image_size"]) == (4, 32) and not searched.violations(params)


def test_a_trial_trains_with_the_epochs_and_image_size_it_drew(setup):
    cloud, storage = setup["cloud"], f"sqlite:///{setup['root'] / 'optuna.db'}"
    space = dataclasses.replace(setup["space"], epochs=(1, 2), image_size=(32, 40))
    run_study(setup["base"], cloud, space, StudyPlan("budgets", storage, n_trials=3, contribute=False))
    trials = optuna.load_study(study_name="budgets", storage=storage).trials
    assert len(trials) == 3
    for trial in trials:
        params = cloud.client.get_run(trial.user_attrs["run_id"]).data.params
        assert (int(params["epochs"]), int(params["image_size"])) == (trial.params["epochs"],
                                                                      trial.params["image_size"])


def test_a_winning_policy_becomes_the_targets_own_recommendable_policy(setup):
    from tfp_mlflow.tune.study import _contribute_best, cloud_policies

    cloud, policy_id = setup["cloud"], setup["policy_id"]
    best = optuna.trial.create_trial(
        params={"architecture": "tf_efficientnet_lite0", "policy": policy_id, "lr": 1e-3, "weight_decay": 1e-4,
                "truncate": None},
        distributions={"architecture": optuna.distributions.CategoricalDistribution(["tf_efficientnet_lite0"]),
                       "policy": optuna.distributions.CategoricalDistribution([policy_id]),
                       "lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
                       "weight_decay": optuna.distributions.FloatDistribution(1e-6, 1e-2, log=True),
                       "truncate": optuna.distributions.CategoricalDistribution([None])},
        value=0.9, user_attrs={"run_id": "r1"})
    base = TrainConfig(target=str(setup["root"] / "fundus_new"), name="fundus_tuned")
    cloud.contribute(None, name="fundus_tuned", keywords=KEYWORDS, num_images=30, num_classes=2)
    _contribute_best(cloud, base, best, cloud_policies(cloud))
    [own] = cloud.knowledge("fundus_tuned", [KnowledgeKind.POLICY])
    assert own.rows[0].policy_id == policy_id and own.rows[0].balanced_accuracy == 0.9
    assert cloud.policy(own.run_id, policy_id) == cloud.policy(cloud_policies(cloud)[policy_id][0], policy_id)
    rec = recommend(cloud, keywords=KEYWORDS, name="fundus_other", selector="manual", top_k=3, log=False)
    sources = [i.source for i in rec.suggestions("augmentation")]
    assert "fundus_tuned" in sources


def test_a_study_of_another_cloud_is_a_one_line_error_before_any_trial(setup, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    other = Cloud(sqlite_uri(tmp_path / 'other' / 'mlflow.db'))
    space = dataclasses.replace(setup["space"], policies=(NO_POLICY,), truncate=(None,))
    run_study(setup["base"], other, space, StudyPlan("shared-name", storage, n_trials=1, contribute=False))
    with pytest.raises(BadInputError, match="belongs to another cloud") as refused:
        run_study(setup["base"], setup["cloud"], space, StudyPlan("shared-name", storage, n_trials=2,
                                                                  contribute=False))
    assert "\n" not in str(refused.value)
    trials = optuna.load_study(study_name="shared-name", storage=storage).get_trials()
    assert len(trials) == 1                                         # nothing ran against the wrong cloud


def test_a_reused_policy_keeps_the_task_it_was_learned_on(tmp_path):
    cloud = Cloud(sqlite_uri(tmp_path / 'cloud' / 'mlflow.db'))
    policy = {"transform": {"__class_fullname__": "HorizontalFlip", "p": 0.5}}
    for task in ("radiograph_1", "natural_1"):       # natural_1 won a study with radiograph_1's policy later
        cloud.contribute(None, name=task, keywords=["x"], knowledge=[Knowledge(
            task, KnowledgeKind.POLICY, (KnowledgeRow(policy_id="flip", balanced_accuracy=0.7),),
            policies={"flip": policy})])
    run_id, source = cloud_policies(cloud)["flip"]
    assert source == "radiograph_1" and cloud.policy(run_id, "flip") == policy


def test_a_study_kept_in_the_cloud_learns_from_the_nearest_tasks_whole_study(setup, tmp_path):
    """`--storage mlflow --transfer studies`: the source's study (run in the RDB storage) is read back from the cloud
    through its parent run; the new study lives in the cloud's tfp-studies experiment, its trials say which study
    shaped them."""
    from tfp_mlflow.cloud.schema import STUDIES_EXPERIMENT
    from tfp_mlflow.cloud.studies import mlflow_storage

    cloud, space = setup["cloud"], dataclasses.replace(setup["space"], truncate=(None,))
    source = DemoTask("fundus_known", "fundus", num_classes=2, num_images=30, image_size=40, seed=6).write(
        tmp_path / "fundus_known")
    run_study(dataclasses.replace(setup["base"], target=str(source)), cloud, space,
              StudyPlan("tune-fundus_known", f"sqlite:///{tmp_path / 'optuna.db'}", n_trials=3, contribute=False))
    plan = StudyPlan("in-the-cloud", "mlflow", n_trials=4, top_k=1, transfer="studies", contribute=False, seed=1)
    result = run_study(setup["base"], cloud, space, plan, recommendation=setup["recommendation"])
    assert len([t for t in result.trials if t["state"] == "COMPLETE"]) >= 4
    assert [t["number"] for t in result.trials] == sorted(t["number"] for t in result.trials)
    assert result.trials[0]["user_attrs"]["warm_start"]                         # the top-k still come first
    shaped = [t["user_attrs"]["transfer_from"] for t in result.trials if "transfer_from" in t["user_attrs"]]
    assert shaped and {s["task"] for s in shaped} == {"fundus_known"}
    kept = optuna.load_study(study_name="in-the-cloud", storage=mlflow_storage(cloud))
    assert len(kept.trials) == len(result.trials)
    assert cloud.experiment_id(STUDIES_EXPERIMENT)
    with pytest.raises(BadInputError, match="--transfer must be one of top-k, studies"):
        dataclasses.replace(plan, transfer="all").check()
