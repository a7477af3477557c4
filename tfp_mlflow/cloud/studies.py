"""Optuna studies kept in the knowledge cloud itself: MLflow's ``MlflowStorage`` over the cloud's tracking store.

With ``--storage mlflow`` a study lives in the cloud's ``tfp-studies`` experiment (the study a run, each trial a
child run with its params, values and attributes), so a team needs one server instead of a server and an Optuna
database. MLflow's storage alone falls short of Optuna's storage contract in three ways, and :func:`mlflow_storage`
returns a subclass that closes each (``CloudStudies``, :mod:`tfp_mlflow.cloud.study_storage`) (measured by
``benchmarks/studies.py`` against the RDB storage on the same work; ``benchmarks/README.md``, ``docs/usage.md``
"Where a study lives"):

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
from collections.abc import Callable, Sequence

from tfp_mlflow.cloud.base import KnowledgeStore
from tfp_mlflow.cloud.schema import STUDIES_EXPERIMENT

__all__ = ["MLFLOW_STORAGE", "mlflow_storage"]

#: What ``--storage`` takes for "the cloud's own store".
MLFLOW_STORAGE = "mlflow"


def mlflow_storage(cloud: KnowledgeStore, *, heartbeat: int | None = None,
                   on_lost: Callable | None = None, flush_interval: float = 1.0, owner: str | None = None,
                   workers: Sequence[str] = ()):
    """An Optuna storage whose studies are runs of the cloud's ``tfp-studies`` experiment (created on first use,
    beside the cloud's artifacts); ``heartbeat`` seconds between a running trial's beats (``None``: no heartbeats),
    ``on_lost(study, trial)`` for a trial failed because its worker went silent.

    ``workers``: the accounts a study this account creates (or resumes) names to run its trials; ``owner``: open
    another account's study as one of its named workers (a name then resolves among that account's studies)."""
    import mlflow

    from tfp_mlflow.cloud.study_storage import CloudStudies  # imports Optuna: only when a study is opened

    experiment_id = cloud.experiment_id(STUDIES_EXPERIMENT)
    # MlflowStorage builds its client from the process's tracking URI when it is constructed; set it for that
    # moment only, so nothing else in the process changes its store.
    with _tracking_uri(mlflow, cloud.uri):
        return CloudStudies(experiment_id=experiment_id, batch_flush_interval=flush_interval,
                            heartbeat=heartbeat, on_lost=on_lost, owner=owner, workers=workers)


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
