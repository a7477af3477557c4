"""Optuna studies kept in the knowledge cloud itself: MLflow's ``MlflowStorage`` over the cloud's tracking store.

With ``--storage mlflow`` a study lives in the cloud's ``tfp-studies`` experiment (the study a run, each trial a
child run with its params, values and attributes), so a team needs one server instead of a server and an Optuna
database. MLflow's storage alone falls short of Optuna's storage contract in three ways, and :func:`mlflow_storage`
returns a subclass that closes each (measured by ``benchmarks/studies.py`` against the RDB storage on the same
work; ``benchmarks/README.md``, ``docs/usage.md`` "Where a study lives"):

* **One study per name.** MLflow's storage creates a new study whenever asked, so ``create_study(
  load_if_exists=True)`` started a second study of the same name instead of resuming the first. Here a name already
  taken raises ``DuplicatedStudyError`` (so the study is loaded), two workers creating one at the same moment both
  end on the older, and a name resolves to the oldest study of that name.
* **A waiting trial goes to one worker.** Taking it was a read of its state followed by a write, so two workers
  could both take an enqueued configuration and another was never run. MLflow params are write-once (the store's
  key is the run and the param's name), so the first worker to write ``tfp.claimed_by`` on the trial's run takes
  it; finishing a trial is claimed the same way (``tfp.finished_by``), so a trial ends once.
* **Heartbeats.** A worker beats on its running trial's run (tag ``tfp.heartbeat``, every ``heartbeat`` seconds,
  from Optuna's heartbeat thread); the next worker to start a trial fails a trial silent for three beats and hands
  it to ``on_lost`` (``tfp tune`` runs its configuration again), as the RDB storage does. Beats are the workers'
  clocks, so machines sharing a study need clocks within a beat of each other (NTP).

What remains is speed: every storage call is one or more tracking-store requests, 0.3 s (SQLite) to 2.1 s (a
server) per trial against 0.02 s for the RDB storage, small against minutes of training.
"""
from __future__ import annotations

import contextlib
import functools
import time
import uuid
from collections.abc import Callable
from typing import Any

from tfp_mlflow.cloud.base import KnowledgeStore
from tfp_mlflow.cloud.schema import STUDIES_EXPERIMENT, Param, Tag

__all__ = ["MLFLOW_STORAGE", "mlflow_storage"]

#: What ``--storage`` takes for "the cloud's own store".
MLFLOW_STORAGE = "mlflow"
#: MLflow's tag on a study run (trial runs have none).
_DIRECTION = "optuna.study_direction"


def mlflow_storage(cloud: KnowledgeStore, *, heartbeat: int | None = None,
                   on_lost: Callable | None = None, flush_interval: float = 1.0):
    """An Optuna storage whose studies are runs of the cloud's ``tfp-studies`` experiment (created on first use,
    beside the cloud's artifacts); ``heartbeat`` seconds between a running trial's beats (``None``: no heartbeats),
    ``on_lost(study, trial)`` for a trial failed because its worker went silent."""
    import mlflow

    experiment_id = cloud.experiment_id(STUDIES_EXPERIMENT)
    # MlflowStorage builds its client from the process's tracking URI when it is constructed; set it for that
    # moment only, so nothing else in the process changes its store.
    with _tracking_uri(mlflow, cloud.uri):
        return _cloud_studies()(experiment_id=experiment_id, batch_flush_interval=flush_interval,
                                heartbeat=heartbeat, on_lost=on_lost)


@functools.cache
def _cloud_studies() -> type:
    """``MlflowStorage`` keeping Optuna's storage contract (the module doc); built on first use, so importing the
    cloud does not import Optuna."""
    import optuna
    from mlflow.exceptions import MlflowException
    from mlflow.optuna import MlflowStorage
    from optuna.exceptions import DuplicatedStudyError, UpdateFinishedTrialError
    from optuna.storages._heartbeat import BaseHeartbeat  # the interface RDBStorage implements (no public alias)
    from optuna.study import StudyDirection
    from optuna.study._frozen import FrozenStudy  # the type every Optuna storage returns here
    from optuna.trial import TrialState

    class CloudStudies(MlflowStorage, BaseHeartbeat):
        def __init__(self, *, heartbeat: int | None = None,
                     on_lost: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
                     **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._heartbeat, self._on_lost = heartbeat, on_lost
            self._worker = uuid.uuid4().hex       # this worker's name in the write-once claims

        # -- one study per name --------------------------------------------------------------------------------
        def create_new_study(self, directions, study_name: str | None = None):
            if study_name is not None and self._named(study_name):
                raise DuplicatedStudyError(f"a study named {study_name!r} is already in the cloud")
            study_id = super().create_new_study(directions, study_name)
            if study_name is not None and self._named(study_name)[0] != study_id:
                # Another worker created it at the same moment: the older is the study, ours goes.
                self._mlflow_client.delete_run(study_id)
                raise DuplicatedStudyError(f"a study named {study_name!r} was created by another worker")
            return study_id

        def get_study_id_from_name(self, study_name: str):
            found = self.get_study_id_by_name_if_exists(study_name)
            if found is None:
                raise KeyError(f"no study named {study_name!r} in the cloud")
            return found

        def get_study_id_by_name_if_exists(self, study_name: str):
            self.flush_all_batches()
            named = self._named(study_name)
            return named[0] if named else None

        def get_all_studies(self):
            """The studies only (MLflow's version reads every run of the experiment, trials too, and fails)."""
            self.flush_all_batches()
            return [FrozenStudy(study_name=run.data.tags["mlflow.runName"], direction=None,
                                directions=[StudyDirection[d] for d in run.data.tags[_DIRECTION].split(",")],
                                user_attrs=self.get_study_user_attrs(run.info.run_id),
                                system_attrs=self.get_study_system_attrs(run.info.run_id), study_id=run.info.run_id)
                    for run in self._search(f"tags.`{_DIRECTION}` LIKE '%'")]

        def _named(self, study_name: str) -> list[str]:
            """Run ids of the studies (not trials) called ``study_name``, oldest first."""
            quote = "'" if "'" not in study_name else '"'
            runs = self._search(f"tags.`{_DIRECTION}` LIKE '%' and tags.mlflow.runName = {quote}{study_name}{quote}")
            return [r.info.run_id for r in sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))]

        # -- a trial changes hands once ------------------------------------------------------------------------
        def set_trial_state_values(self, trial_id, state, values=None) -> bool:
            if state == TrialState.RUNNING:
                if not self._first_to_write(trial_id, Param.CLAIMED_BY):
                    return False                  # another worker took this waiting trial
                self.record_heartbeat(trial_id)   # before any other worker can see it RUNNING
            elif state.is_finished() and not self._first_to_write(trial_id, Param.FINISHED_BY):
                raise UpdateFinishedTrialError(f"trial run {trial_id} was already finished by another worker")
            return super().set_trial_state_values(trial_id, state, values)

        def _first_to_write(self, run_id: str, key: str) -> bool:
            try:
                self._mlflow_client.log_param(run_id, key, self._worker)
            except MlflowException:
                held = self._mlflow_client.get_run(run_id).data.params.get(key)
                if held is None:                  # not a write-once refusal: the store itself failed
                    raise
                return held == self._worker
            return True

        # -- heartbeats (Optuna's BaseHeartbeat) ---------------------------------------------------------------
        def record_heartbeat(self, trial_id) -> None:
            self._mlflow_client.set_tag(trial_id, Tag.HEARTBEAT, f"{time.time():.3f}")

        def _get_stale_trial_ids(self, study_id) -> list[str]:
            if self._heartbeat is None:
                return []
            self.flush_all_batches()
            now, grace = time.time(), 3 * self._heartbeat
            running = self._search(f"tags.mlflow.parentRunId = '{study_id}' and attributes.status = 'RUNNING'")
            return [run.info.run_id for run in running
                    if now - float(run.data.tags.get(Tag.HEARTBEAT, run.info.start_time / 1000)) > grace]

        def get_heartbeat_interval(self) -> int | None:
            return self._heartbeat

        def get_heartbeat_stale_trial_callback(self):
            return self._on_lost

        def _search(self, filter_string: str) -> list:
            """Every run of the studies experiment matching ``filter_string``, all pages."""
            out, token = [], None
            while True:
                page = self._mlflow_client.search_runs(experiment_ids=[self._experiment_id], max_results=1000,
                                                       page_token=token, filter_string=filter_string)
                out.extend(page)
                token = page.token
                if not token:
                    return out

    return CloudStudies


@contextlib.contextmanager
def _tracking_uri(mlflow, uri: str):
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        if previous is None:
            mlflow.set_tracking_uri("")
        else:
            mlflow.set_tracking_uri(previous)
