"""Studies kept in the cloud's own MLflow store keep Optuna's storage contract: one study per name (so a second
worker or a rerun resumes it), studies listed without their trials, a waiting trial taken by one worker, a trial
finished once, and a silent worker's trial failed and handed on by heartbeats."""
from __future__ import annotations

import time
from unittest import mock

import optuna
import pytest
from mlflow.optuna import MlflowStorage
from optuna.distributions import FloatDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState

from tfp_mlflow.cloud import Cloud
from tfp_mlflow.cloud.schema import STUDIES_EXPERIMENT, Param
from tfp_mlflow.cloud.studies import mlflow_storage
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


def test_a_waiting_trial_goes_to_the_first_worker_to_claim_it_and_ends_once(cloud):
    first, second = mlflow_storage(cloud), mlflow_storage(cloud)       # two workers
    study = optuna.create_study(study_name="queue", storage=first, direction="maximize")
    study.enqueue_trial({"lr": 1e-3})
    first.flush_all_batches()
    waiting = study.trials[0]._trial_id
    # The first worker has claimed it but not yet written RUNNING: the state still reads WAITING to the second.
    assert first._first_to_write(waiting, Param.CLAIMED_BY)
    assert cloud.client.get_run(waiting).info.status == "SCHEDULED"
    assert second.set_trial_state_values(waiting, TrialState.RUNNING) is False
    assert first.set_trial_state_values(waiting, TrialState.RUNNING) is True
    taken = second.get_trial(waiting)                                  # started when taken, not when enqueued
    assert taken.datetime_start.timestamp() * 1000 > cloud.client.get_run(waiting).info.start_time
    assert second.get_trial_id_from_study_id_trial_number(study._study_id, 0) == waiting   # study.tell(number)
    assert first.set_trial_state_values(waiting, TrialState.COMPLETE, [0.5]) is True
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        second.set_trial_state_values(waiting, TrialState.FAIL)          # a late stale check changes nothing
    assert optuna.load_study(study_name="queue", storage=second).trials[0].value == 0.5


def test_a_silent_workers_trial_is_failed_by_the_next_worker_and_handed_on(cloud):
    lost: list[int] = []
    dead = mlflow_storage(cloud, heartbeat=1)
    study = optuna.create_study(study_name="beats", storage=dead, direction="maximize")
    trial = study.ask(LR)                         # a running trial whose worker then dies: no more beats
    alive = mlflow_storage(cloud, heartbeat=1, on_lost=lambda study, frozen: lost.append(frozen.number))
    joined = optuna.load_study(study_name="beats", storage=alive)
    dead.record_heartbeat(trial._trial_id)        # its last beat, just before the first look (a busy machine may
    dead.flush_all_batches()                      # take seconds to open the second storage)
    assert alive._get_stale_trial_ids(joined._study_id) == []            # within three beats
    time.sleep(3.5)
    assert alive._get_stale_trial_ids(joined._study_id) == [trial._trial_id]
    optuna.storages.fail_stale_trials(joined)
    assert joined.trials[0].state == TrialState.FAIL and lost == [trial.number]
    assert mlflow_storage(cloud)._get_stale_trial_ids(joined._study_id) == []   # no heartbeat set: none checked


def test_a_malformed_heartbeat_is_ignored_and_never_crashes_the_reader(cloud, caplog):
    from tfp_mlflow.cloud.schema import Tag

    storage = mlflow_storage(cloud, heartbeat=1)
    study = optuna.create_study(study_name="beats", storage=storage, direction="maximize")
    trial = study.ask(LR)
    storage.flush_all_batches()
    cloud.client.set_tag(trial._trial_id, Tag.HEARTBEAT, "not a number")
    assert storage._get_stale_trial_ids(study._study_id) == []          # started just now: not stale, no error
    assert "malformed heartbeat" in caplog.text


def test_only_the_owners_studies_and_trials_are_read(cloud, monkeypatch):
    """Another account's same-named study and a trial it adds to ours are invisible to the owner's storage (behind
    tfp-basic-auth the server also refuses its writes to our runs; tests/plugins/test_attacks.py)."""
    from tfp_mlflow.cloud.schema import Tag

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "mallory")
    squatted = started(cloud, "tune-x")                                  # mallory was first to the name
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    mine = optuna.create_study(study_name="tune-x", storage=mlflow_storage(cloud), direction="maximize",
                               load_if_exists=True)
    assert mine._study_id != squatted._study_id and mine.trials == []
    mine.tell(mine.ask(LR), 0.5)
    # mallory adds a finished trial run under alice's study with MLflow's own API
    experiment = cloud.client.get_experiment_by_name(STUDIES_EXPERIMENT).experiment_id
    fake = cloud.client.create_run(experiment, tags={"mlflow.parentRunId": mine._study_id, Tag.MLFLOW_USER: "mallory",
                                                     "param_directions": "{}", "numbers": "1"})
    cloud.client.log_metric(fake.info.run_id, "value", 0.99)
    cloud.client.set_terminated(fake.info.run_id, "FINISHED")
    again = optuna.load_study(study_name="tune-x", storage=mlflow_storage(cloud))
    assert again._study_id == mine._study_id and [t.value for t in again.trials] == [0.5]
    assert optuna.get_all_study_names(mlflow_storage(cloud)) == ["tune-x"]   # alice's, one
    run = cloud.client.get_run(mine._study_id)
    assert run.data.tags[Tag.KIND] == "optuna_study" and run.data.tags[Tag.MLFLOW_USER] == "alice"
