"""Your own runs: a fingerprint and a result logged next to any MLflow run, harvested into a cloud, and a user's own
Optuna study warm-started from it. Real MLflow (SQLite), real Optuna; fingerprints made with the test spec (no
torch: the examples' tests in tests/test_examples.py train and draw for real)."""
from __future__ import annotations

import json

import mlflow
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

import tfp_mlflow
from tfp_mlflow.cloud import Cloud, KnowledgeKind
from tfp_mlflow.cloud.schema import KNOWLEDGE_KINDS
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.testing.stores import sqlite_uri
from tfp_mlflow.workflows.harvesting import RunMapping, harvest

POLICY = {"transform": {"__class_fullname__": "Compose", "p": 1.0, "transforms": [
    {"__class_fullname__": "HorizontalFlip", "p": 0.5}]}}


@pytest.fixture
def lab(tmp_path, small_spec, make_fingerprint, monkeypatch):
    """A lab's own tracking store with runs made by its own code, and an empty cloud with the lab's spec."""
    runs = sqlite_uri(tmp_path / "runs" / "mlflow.db")
    cloud = Cloud(sqlite_uri(tmp_path / "cloud" / "mlflow.db"), cache_dir=tmp_path / "cache")
    cloud.ensure_spec(small_spec)
    mlflow.set_tracking_uri(runs)
    # The lab's artifacts beside its store (MLflow's default, ./mlruns, would be the directory pytest runs in),
    # its experiment named through the environment (mlflow.set_experiment would hold it for the whole process).
    experiment = mlflow.create_experiment("derm-lab", artifact_location=(tmp_path / "runs" / "artifacts").as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment)
    yield runs, cloud, make_fingerprint
    mlflow.set_tracking_uri(None)


def _run(fingerprint, name: str, **result):
    with mlflow.start_run(run_name=name) as run:
        tfp_mlflow.log_task(fingerprint)
        if result:
            tfp_mlflow.log_result(**result)
    return run.info.run_id


def test_a_run_carries_its_fingerprint_as_artifact_dataset_input_and_tags(lab):
    runs, _, make = lab
    fingerprint = make("derm_a", seed=1)
    run_id = _run(fingerprint, "first", architecture="resnet18", balanced_accuracy=0.82, held_out=200,
                  policy=POLICY)
    run = mlflow.MlflowClient(runs).get_run(run_id)
    assert run.data.tags["tfp.task"] == "derm_a" and len(run.data.tags["tfp.fingerprint_sha256"]) == 64
    assert run.data.metrics["tfp.balanced_accuracy"] == 0.82 and run.data.tags["tfp.result.held_out"] == "200"
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "derm_a" and dataset.dataset.digest == run.data.tags["tfp.fingerprint_sha256"][:16]
    assert {t.key: t.value for t in dataset.tags}["mlflow.data.context"] == "training"
    artifacts = {a.path for a in mlflow.MlflowClient(runs).list_artifacts(run_id, "tfp")}
    assert {"tfp/fingerprint.npz", "tfp/fingerprint.png", "tfp/policy"} <= artifacts


def test_outside_a_run_and_without_a_task_are_one_line_errors(lab):
    _, _, make = lab
    with pytest.raises(BadInputError, match="no active MLflow run"):
        tfp_mlflow.log_task(make("x"))
    with mlflow.start_run(), pytest.raises(BadInputError, match="call tfp_mlflow.log_task"):
        tfp_mlflow.log_result(architecture="resnet18", balanced_accuracy=0.8)
    with mlflow.start_run():
        tfp_mlflow.log_task(make("y"))
        with pytest.raises(BadInputError, match="outside \\[0, 1\\]"):
            tfp_mlflow.log_result(architecture="resnet18", balanced_accuracy=81.0)
        with pytest.raises(BadInputError, match="not albumentations' saved JSON"):
            tfp_mlflow.log_result(architecture="resnet18", balanced_accuracy=0.8, policy={"flip": True})


def test_harvest_turns_runs_into_knowledge_with_provenance_once(lab):
    runs, cloud, make = lab
    source, target = make("chest_src", seed=2), make("chest_new", seed=3)
    first = _run(source, "src", architecture="resnet18", balanced_accuracy=0.7, held_out=300)
    second = _run(target, "new-imagenet", architecture="efficientnet_b0", balanced_accuracy=0.8, held_out=250,
                  pretrained="imagenet", policy=POLICY)
    third = _run(target, "new-from-src", architecture="efficientnet_b0", balanced_accuracy=0.86, held_out=250,
                 pretrained="chest_src")
    _run(make("unfinished", seed=4), "no-result")                      # no metric: skipped, one line
    dry = harvest(["derm-lab"], cloud, source=runs)
    assert {r.run_name: r.status for r in dry.runs} == {"src": "new", "new-imagenet": "new", "new-from-src": "new",
                                                         "no-result": "skipped"}
    assert "no validation metric found" in next(r.reason for r in dry.runs if r.run_name == "no-result")
    assert cloud.tasks() == []                                         # a dry run writes nothing
    done = harvest(["derm-lab"], cloud, source=runs, contribute=True)
    assert done.counts() == {"contributed": 3, "skipped": 1}
    assert sorted(t.name for t in cloud.tasks()) == ["chest_new", "chest_src"]
    kinds = {(k.kind, k.rows[0].evidence_run) for k in cloud.knowledge("chest_new")}
    assert {(KnowledgeKind.ARCHITECTURE, second), (KnowledgeKind.BASELINE, second), (KnowledgeKind.POLICY, second),
            (KnowledgeKind.ARCHITECTURE, third), (KnowledgeKind.PRETRAINING, third)} == kinds
    transfer = cloud.knowledge("chest_new", [KnowledgeKind.PRETRAINING])[0]
    assert transfer.rows[0].source == "chest_src" and transfer.rows[0].held_out == 250
    assert transfer.provenance == f"mlflow run {third}"
    assert cloud.knowledge("chest_src")[0].rows[0].evidence_run == first
    before = len(cloud.knowledge_runs(KNOWLEDGE_KINDS))
    again = harvest(["derm-lab"], cloud, source=runs, contribute=True)
    assert again.counts() == {"in the cloud": 3, "skipped": 1}          # a rerun adds nothing twice
    assert len(cloud.knowledge_runs(KNOWLEDGE_KINDS)) == before


def test_runs_made_without_tfp_are_read_through_a_mapping_and_bad_ones_skipped_one_line_each(lab, tmp_path):
    runs, cloud, make = lab
    fingerprint = make("skin", seed=5)
    with mlflow.start_run(run_name="theirs"):
        tfp_mlflow.log_task(fingerprint)                                # the task; the rest is their own names
        mlflow.log_params({"net": "convnext_tiny", "init": "/checkpoints/last.pt", "n_val": 120})
        mlflow.log_metric("score", 91.5)                                # a percentage
    with mlflow.start_run(run_name="bad-metric"):
        tfp_mlflow.log_task(fingerprint)
        mlflow.log_params({"net": "resnet18", "n_val": 50})
        mlflow.log_param("score", "high")
    with mlflow.start_run(run_name="no-task"):
        mlflow.log_params({"net": "resnet18", "n_val": 50})
        mlflow.log_metric("score", 0.7)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("architecture: params.net\npretrained: init\nbalanced_accuracy: [score]\n"
                       "held_out: params.n_val\n")
    report = harvest(["derm-lab"], cloud, source=runs, mapping=RunMapping.load(mapping), contribute=True)
    by_name = {r.run_name: r for r in report.runs}
    assert by_name["theirs"].status == "contributed"
    assert "not a number" in by_name["bad-metric"].reason
    assert "no tfp fingerprint and no dataset input tfp can read" in by_name["no-task"].reason
    assert all("\n" not in r.reason for r in report.runs)
    (architecture,) = cloud.knowledge("skin", [KnowledgeKind.ARCHITECTURE])
    assert (architecture.rows[0].architecture, architecture.rows[0].balanced_accuracy,
            architecture.rows[0].held_out) == ("convnext_tiny", 0.915, 120)
    # Pretrained on a checkpoint that is no task: no transfer outcome and no baseline either.
    assert {k.kind for k in cloud.knowledge("skin")} == {KnowledgeKind.ARCHITECTURE}
    # A mapping naming a parameter the run lacks, and one naming an unknown field: one line each.
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"architecture": "params.nope", "balanced_accuracy": "score"}))
    lacking = harvest(["derm-lab"], cloud, source=runs, mapping=RunMapping.load(missing))
    assert "names params.nope, which this run does not have" in {r.run_name: r for r in lacking.runs}["theirs"].reason
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"accuracy": "score"}))
    with pytest.raises(BadInputError, match="names accuracy; its keys are architecture, auroc"):
        RunMapping.load(wrong)
    with pytest.raises(BadInputError, match="experiment 'nope' is not on"):
        harvest(["nope"], cloud, source=runs)


def test_a_tampered_fingerprint_artifact_is_skipped_and_nothing_of_it_is_written(lab, tmp_path):
    runs, cloud, make = lab
    run_id = _run(make("tampered", seed=6), "tampered", architecture="resnet18", balanced_accuracy=0.8)
    other = make("other", seed=7).save(tmp_path / "fingerprint.npz")
    mlflow.MlflowClient(runs).log_artifact(run_id, str(other), "tfp")      # overwrites tfp/fingerprint.npz
    report = harvest(["derm-lab"], cloud, source=runs, contribute=True)
    assert report.runs[0].status == "skipped" and "does not match the checksum" in report.runs[0].reason
    assert cloud.tasks() == []


def test_a_users_own_study_is_warm_started_in_its_own_names(lab, tmp_path):
    runs, cloud, make = lab
    near = make("near_task", seed=8, shape=2.0)
    _run(near, "near", architecture="efficientnet_b0", balanced_accuracy=0.9, held_out=400)
    _run(make("far_task", seed=9, shape=4.0), "far", architecture="resnet18", balanced_accuracy=0.95, held_out=400)
    harvest(["derm-lab"], cloud, source=runs, contribute=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="mine", storage=storage, direction="maximize")
    space = {"backbone": CategoricalDistribution(["resnet18", "efficientnet_b0"]),
             "learning_rate": FloatDistribution(1e-5, 1e-1, log=True), "dropout": FloatDistribution(0.0, 0.5)}
    start = tfp_mlflow.warm_start(study, make("query", seed=8, shape=2.05), cloud, space=space)
    suggested = [s.architecture for s in start.recommendation.suggestions("architecture")]
    assert sorted(suggested) == ["efficientnet_b0", "resnet18"]
    assert [e["params"]["backbone"] for e in start.enqueued] == suggested            # in the recommendation's order
    assert all(set(e["params"]) == {"backbone", "learning_rate"} for e in start.enqueued)         # no dropout
    seen = []

    def objective(trial):
        seen.append(trial.suggest_categorical("backbone", ["resnet18", "efficientnet_b0"]))
        trial.suggest_float("learning_rate", 1e-5, 1e-1, log=True)
        return trial.suggest_float("dropout", 0.0, 0.5)

    study.optimize(objective, n_trials=3)
    assert seen[:2] == suggested                                                     # the objective stays theirs
    first = start.recommendation.suggestions("architecture")[0]
    assert optuna.load_study(study_name="mine", storage=storage).trials[0].user_attrs["architecture_source"] == \
        first.source
    narrow = {"backbone": CategoricalDistribution(["vit_tiny"])}
    other = optuna.create_study(direction="maximize")
    assert tfp_mlflow.warm_start(other, near, cloud, space=narrow).enqueued == []
    with pytest.raises(BadInputError, match="names maps 'model', which is not in your space"):
        tfp_mlflow.warm_start(other, near, cloud, space=narrow, names={"model": "architecture"})
