"""Studies kept in the cloud's own MLflow store: one study per name (so a second worker or a rerun resumes it),
the studies listed without their trials, and a worker that joins a running study hears what that store does not
do for several workers."""
from __future__ import annotations

from unittest import mock

import optuna
import pytest
from mlflow.optuna import MlflowStorage
from optuna.distributions import FloatDistribution
from optuna.study import StudyDirection

from tfp_mlflow.cloud import Cloud
from tfp_mlflow.cloud.schema import STUDIES_EXPERIMENT
from tfp_mlflow.cloud.studies import MLFLOW_STORAGE, mlflow_storage
from tfp_mlflow.testing.stores import sqlite_uri

LR = {"lr": FloatDistribution(1e-4, 1e-2, log=True)}


@pytest.fixture
def cloud(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return Cloud(sqlite_uri(tmp_path / "cloud" / "mlflow.db"), cache_dir=tmp_path / "cache")


def started(cloud: Cloud, name: str) -> optuna.Study:
    """A study with one finished trial (0.7) and one another worker is still running."""
    storage = mlflow_storage(cloud)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.tell(study.ask(LR), 0.7)
    study.ask()
    storage.flush_all_batches()
    return study


def test_a_name_is_one_study_and_a_rerun_resumes_it(cloud):
    first = started(cloud, "shared")
    again = optuna.create_study(study_name="shared", storage=mlflow_storage(cloud), direction="maximize",
                                load_if_exists=True)
    assert again._study_id == first._study_id and len(again.trials) == 2
    assert optuna.get_all_study_names(mlflow_storage(cloud)) == ["shared"]      # the trials are not studies
    experiment = cloud.client.get_experiment_by_name(STUDIES_EXPERIMENT)
    assert len(cloud.client.search_runs([experiment.experiment_id])) == 3     # one study run, two trial runs


def test_two_workers_creating_one_study_at_once_both_end_on_the_older(cloud):
    older = started(cloud, "raced")
    storage = mlflow_storage(cloud)
    real = storage._named
    # This worker looked for the name just before the other created it, then created its own.
    with mock.patch.object(storage, "_named", side_effect=[[], real("raced")]), \
            pytest.raises(optuna.exceptions.DuplicatedStudyError, match="created by another worker"):
        storage.create_new_study([StudyDirection.MAXIMIZE], "raced")
    joined = optuna.load_study(study_name="raced", storage=mlflow_storage(cloud))
    assert joined._study_id == older._study_id and optuna.get_all_study_names(storage) == ["raced"]
    # A duplicate left by MLflow's own storage (which creates one per call): the oldest is the study.
    MlflowStorage.create_new_study(storage, [StudyDirection.MAXIMIZE], "raced")
    assert mlflow_storage(cloud).get_study_id_from_name("raced") == older._study_id
    with pytest.raises(KeyError, match="no study named 'absent'"):
        storage.get_study_id_from_name("absent")


@pytest.mark.torch   # run_study's module imports the trainer
def test_a_worker_joining_a_running_study_in_the_mlflow_store_is_told_to_prefer_an_rdb(cloud, tmp_path):
    from tfp_mlflow.train import TrainConfig
    from tfp_mlflow.tune import SearchSpace, StudyPlan, run_study

    started(cloud, "shared")
    notes: list[str] = []
    plan = StudyPlan("shared", MLFLOW_STORAGE, n_trials=1, contribute=False)
    base = TrainConfig(target=str(tmp_path / "data"), name="target")
    result = run_study(base, cloud, SearchSpace(architectures=("tf_efficientnet_lite0",)), plan, on_note=notes.append)
    assert result.joined and result.best_value == pytest.approx(0.7) and len(result.trials) == 2
    assert len(notes) == 1 and "1 of its trials run elsewhere" in notes[0] and "RDB --storage" in notes[0]
