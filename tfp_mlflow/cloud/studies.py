"""Optuna studies kept in the knowledge cloud itself: MLflow's ``MlflowStorage`` over the cloud's tracking store.

With ``--storage mlflow`` a study lives in the cloud's ``tfp-studies`` experiment (the study a run, each trial a
child run with its params, values and attributes), so a team needs one server instead of a server and an Optuna
database. What it holds and what it does not, measured by ``benchmarks/studies.py`` against the RDB storage on the
same work (``benchmarks/README.md``; ``docs/usage.md``, "Where a study lives"): it keeps a study of one worker
correctly, at 0.5 s (SQLite) to 2 s (a server) of storage calls per trial against 0.03 s; it has no heartbeats, so a
killed worker's trial stays RUNNING and is not run again; and taking a waiting trial is a read followed by a write,
so with several workers an enqueued configuration can be lost (1 of 8 with 4 workers behind a server). Several
workers sharing a study should use an RDB URL.
"""
from __future__ import annotations

import contextlib

from tfp_mlflow.cloud.base import KnowledgeStore
from tfp_mlflow.cloud.schema import STUDIES_EXPERIMENT

__all__ = ["MLFLOW_STORAGE", "mlflow_storage"]

#: What ``--storage`` takes for "the cloud's own store".
MLFLOW_STORAGE = "mlflow"


def mlflow_storage(cloud: KnowledgeStore, *, flush_interval: float = 1.0):
    """An Optuna storage whose studies are runs of the cloud's ``tfp-studies`` experiment (created on first use,
    beside the cloud's artifacts)."""
    import mlflow
    from mlflow.optuna import MlflowStorage

    experiment_id = cloud.experiment_id(STUDIES_EXPERIMENT)
    # MlflowStorage builds its client from the process's tracking URI when it is constructed; set it for that
    # moment only, so nothing else in the process changes its store.
    with _tracking_uri(mlflow, cloud.uri):
        return MlflowStorage(experiment_id=experiment_id, batch_flush_interval=flush_interval)


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
