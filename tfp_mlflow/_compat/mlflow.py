"""MLflow's private names that tfp uses.

* ``MlflowStorage`` (``mlflow.optuna``) keeps its client and experiment in the private attributes read by
  :func:`storage_client` and :func:`storage_experiment`, and encodes a trial's number, a study's direction and
  Optuna's system attributes in run tags named by :data:`TRIAL_NUMBER_TAG`, :data:`STUDY_DIRECTION_TAG` and
  :data:`SYSTEM_ATTR_PREFIX`; the cloud's study storage subclasses it.
* ``mlflow.server.handlers._get_tracking_store``: the tracking store a server's own handlers use, which the
  server plugin's checks must read exactly as the handler will (:func:`tracking_store`).
"""
from __future__ import annotations

from typing import Any

__all__ = ["CHECKED", "TRIAL_NUMBER_TAG", "STUDY_DIRECTION_TAG", "SYSTEM_ATTR_PREFIX", "storage_client",
           "storage_experiment", "tracking_store"]

#: The MLflow versions these names were checked against: at least the first, below the second.
CHECKED = ("3.17", "3.18")
TRIAL_NUMBER_TAG = "numbers"
STUDY_DIRECTION_TAG = "optuna.study_direction"
SYSTEM_ATTR_PREFIX = "sys_"


def storage_client(storage: Any):
    """The ``MlflowClient`` an ``MlflowStorage`` writes through."""
    return storage._mlflow_client


def storage_experiment(storage: Any) -> str:
    """The experiment an ``MlflowStorage`` keeps its studies in."""
    return storage._experiment_id


def tracking_store():
    """The tracking store of the running ``mlflow server`` (what its handlers read and write)."""
    from mlflow.server.handlers import _get_tracking_store

    return _get_tracking_store()
