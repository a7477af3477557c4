"""The Optuna storage behind ``--storage mlflow``: MLflow's ``MlflowStorage`` keeping Optuna's storage contract
(one study per name, one taker per waiting trial, a trial finished once, heartbeats) and the cloud's ownership rules
(a study and its trials are tfp runs of the account that created them; a name resolves among that account's
studies; only its trials, and those of the worker accounts it named, are read); :mod:`tfp_mlflow.cloud.studies`
says why and opens it."""
from __future__ import annotations

import datetime
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from mlflow.exceptions import MlflowException
from mlflow.optuna import MlflowStorage
from optuna.exceptions import DuplicatedStudyError, UpdateFinishedTrialError
from optuna.study import StudyDirection
from optuna.trial import TrialState

from tfp_mlflow._compat.mlflow import (
    STUDY_DIRECTION_TAG,
    SYSTEM_ATTR_PREFIX,
    TRIAL_NUMBER_TAG,
    storage_client,
    storage_experiment,
)
from tfp_mlflow._compat.optuna import BaseHeartbeat, FrozenStudy
from tfp_mlflow.cloud.records import contributor as current_contributor
from tfp_mlflow.cloud.schema import Kind, Param, Tag
from tfp_mlflow.errors import BadInputError

__all__ = ["CloudStudies"]

#: MLflow's tag on a study run (trial runs have none).
_DIRECTION = STUDY_DIRECTION_TAG
#: The system attr holding when a waiting trial was taken (Unix seconds).
_CLAIMED_AT = "tfp_claimed_at"


class CloudStudies(MlflowStorage, BaseHeartbeat):
    """MLflow's storage over one experiment, with ``heartbeat`` seconds between a running trial's beats (``None``:
    none) and ``on_lost(study, trial)`` for a trial failed because its worker fell silent."""

    def __init__(self, *, heartbeat: int | None = None,
                 on_lost: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
                 owner: str | None = None, workers: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._heartbeat, self._on_lost = heartbeat, on_lost
        self._worker = uuid.uuid4().hex       # this worker's name in the write-once claims
        self._me = current_contributor()      # the account this storage writes as
        self._study_owner = owner or self._me  # the account whose studies a name resolves among
        self._workers = tuple(sorted({w.strip() for w in workers if w.strip()}))
        if self._workers and self._study_owner != self._me:
            raise BadInputError(f"only {self._study_owner} names the workers of their studies")
        self._owners: dict[str, tuple[str, frozenset[str]]] = {}   # study run id -> its owner and named workers

    @property
    def _client(self):
        """The MLflow client MlflowStorage writes through (its private attribute: :mod:`tfp_mlflow._compat.mlflow`)."""
        return storage_client(self)

    # -- one study per name --------------------------------------------------------------------------------
    def create_new_study(self, directions, study_name: str | None = None):
        if study_name is not None:
            named = self._named(study_name)
            if named:
                if self._workers:              # the owner names (more) workers of a study it resumes
                    self._client.set_tag(named[0], Tag.WORKERS, ",".join(self._workers))
                    self._owners.pop(named[0], None)
                raise DuplicatedStudyError(f"a study named {study_name!r} is already in the cloud")
        if self._study_owner != self._me:
            raise BadInputError(f"{self._study_owner} has no study named {study_name!r} in the cloud yet: they start "
                                f"it, naming you as a worker (`tfp tune ... --workers {self._me}`)")
        study_name = study_name or f"no-name-{uuid.uuid4()}"
        # MLflow's own study run, born a tfp run of this account: behind tfp-basic-auth nobody else may write it.
        workers = {Tag.WORKERS: ",".join(self._workers)} if self._workers else {}
        study_id = self._client.create_run(experiment_id=storage_experiment(self), tags={
            "mlflow.runName": study_name, _DIRECTION: ",".join(d.name for d in directions),
            **self._owned(Kind.OPTUNA_STUDY), **workers}).info.run_id
        if study_name is not None and self._named(study_name)[0] != study_id:
            # Another worker created it at the same moment: the older is the study, ours goes.
            self._client.delete_run(study_id)
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
        """This account's studies only (MLflow's version reads every run of the experiment, trials too, and
        fails)."""
        self.flush_all_batches()
        return [FrozenStudy(study_name=run.data.tags["mlflow.runName"], direction=None,
                            directions=[StudyDirection[d] for d in run.data.tags[_DIRECTION].split(",")],
                            user_attrs=self.get_study_user_attrs(run.info.run_id),
                            system_attrs=self.get_study_system_attrs(run.info.run_id), study_id=run.info.run_id)
                for run in self._search(f"tags.`{_DIRECTION}` LIKE '%'") if _writer(run) == self._study_owner]

    def _named(self, study_name: str) -> list[str]:
        """Run ids of the owner's studies (not trials) called ``study_name``, oldest first: another account's
        study of the same name, whatever start time it claims, is never opened as the owner's."""
        quote = "'" if "'" not in study_name else '"'
        runs = self._search(f"tags.`{_DIRECTION}` LIKE '%' and tags.mlflow.runName = {quote}{study_name}{quote}")
        return [r.info.run_id for r in sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))
                if _writer(r) == self._study_owner]

    # -- a study's trials are its owner's ------------------------------------------------------------------
    def create_new_trial(self, study_id, template_trial=None):
        trial_id = super().create_new_trial(study_id, template_trial)
        for key, value in self._owned(Kind.OPTUNA_TRIAL).items():
            self._client.set_tag(trial_id, key, value)
        return trial_id

    def get_all_trials(self, study_id, deepcopy: bool = True, states=None):
        """The study's trials written by the study's owner or a worker it named; a trial run anyone else added is
        not the study's."""
        self.flush_all_batches()
        trials = [self.get_trial(run.info.run_id) for run in self._trial_runs(study_id)]
        return [t for t in trials if states is None or t.state in states]

    def get_n_trials(self, study_id, states=None) -> int:
        if states is not None:
            return len(self.get_all_trials(study_id, states=states))
        self.flush_all_batches()
        return len(self._trial_runs(study_id))

    def _trial_runs(self, study_id, extra: str = "") -> list:
        owner, workers = self._members(study_id)
        return [run for run in self._search(f"tags.mlflow.parentRunId = '{study_id}'{extra}")
                if _writer(run) == owner or _writer(run) in workers]

    def _members(self, study_id) -> tuple[str, frozenset[str]]:
        """The study's owner and the worker accounts it named (``tfp.workers`` on its run, which only it writes)."""
        if study_id not in self._owners:
            run = self._client.get_run(study_id)
            named = run.data.tags.get(Tag.WORKERS, "")
            self._owners[study_id] = (_writer(run), frozenset(w for w in named.split(",") if w))
        return self._owners[study_id]

    def _owned(self, kind: str) -> dict[str, str]:
        return {Tag.KIND: kind, Tag.CONTRIBUTOR: self._me, Tag.MLFLOW_USER: self._me}

    # -- a trial changes hands once ------------------------------------------------------------------------
    def set_trial_state_values(self, trial_id, state, values=None) -> bool:
        if state == TrialState.RUNNING:
            if not self._first_to_write(trial_id, Param.CLAIMED_BY):
                return False                  # another worker took this waiting trial
            self.record_heartbeat(trial_id)   # before any other worker can see it RUNNING
            # When it started running (the run's own start is when it was enqueued), written now, not batched.
            self._client.set_tag(trial_id, f"{SYSTEM_ATTR_PREFIX}{_CLAIMED_AT}", json.dumps(time.time()))
        elif state.is_finished() and not self._first_to_write(trial_id, Param.FINISHED_BY):
            raise UpdateFinishedTrialError(f"trial run {trial_id} was already finished by another worker")
        return super().set_trial_state_values(trial_id, state, values)

    def get_trial(self, trial_id):
        """MLflow's trial, started when it was taken (as an RDB storage's), not when it was enqueued."""
        frozen = super().get_trial(trial_id)
        claimed = frozen.system_attrs.get(_CLAIMED_AT)
        if claimed is not None:
            frozen.datetime_start = datetime.datetime.fromtimestamp(float(claimed))
        return frozen

    def get_trial_id_from_study_id_trial_number(self, study_id, trial_number: int):
        """The run of trial ``trial_number`` (MLflow's storage does not implement it: ``study.tell(number)``)."""
        self.flush_all_batches()
        runs = self._trial_runs(study_id, f" and tags.{TRIAL_NUMBER_TAG} = '{int(trial_number)}'")
        if not runs:
            raise KeyError(f"no trial {trial_number} in study run {study_id}")
        return min(runs, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id

    def _first_to_write(self, run_id: str, key: str) -> bool:
        try:
            self._client.log_param(run_id, key, self._worker)
        except MlflowException:
            held = self._client.get_run(run_id).data.params.get(key)
            if held is None:                  # not a write-once refusal: the store itself failed
                raise
            return held == self._worker
        return True

    # -- heartbeats (Optuna's BaseHeartbeat) ---------------------------------------------------------------
    def record_heartbeat(self, trial_id) -> None:
        self._client.set_tag(trial_id, Tag.HEARTBEAT, f"{time.time():.3f}")

    def _get_stale_trial_ids(self, study_id) -> list[str]:  # type: ignore[override]  # ids: MLflow run ids
        if self._heartbeat is None:
            return []
        self.flush_all_batches()
        now, grace = time.time(), 3 * self._heartbeat
        running = self._trial_runs(study_id, " and attributes.status = 'RUNNING'")
        return [run.info.run_id for run in running if now - _last_beat(run) > grace]

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat

    def get_heartbeat_stale_trial_callback(self):
        return self._on_lost

    def _search(self, filter_string: str) -> list:
        """Every run of the studies experiment matching ``filter_string``, all pages."""
        out, token = [], None
        while True:
            page = self._client.search_runs(experiment_ids=[storage_experiment(self)], max_results=1000,
                                                   page_token=token, filter_string=filter_string)
            out.extend(page)
            token = page.token
            if not token:
                return out


def _writer(run) -> str:
    """The account that created a run: ``mlflow.user`` (which a tfp-basic-auth server sets to the caller)."""
    return run.data.tags.get(Tag.MLFLOW_USER) or run.info.user_id or ""


def _last_beat(run) -> float:
    """A running trial's last heartbeat (Unix seconds), else its start; a malformed beat is logged and ignored,
    never a crash of the worker that reads it."""
    beat = run.data.tags.get(Tag.HEARTBEAT)
    if beat is not None:
        try:
            value = float(beat)
            if math.isfinite(value):
                return value
        except ValueError:
            pass
        logging.getLogger(__name__).warning("trial run %s has a malformed heartbeat %r: ignored", run.info.run_id,
                                            beat[:40])
    return run.info.start_time / 1000
