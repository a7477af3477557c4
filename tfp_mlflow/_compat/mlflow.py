"""MLflow's private names that tfp uses.

* ``MlflowStorage`` (``mlflow.optuna``) keeps its client and experiment in the private attributes read by
  :func:`storage_client` and :func:`storage_experiment`, and encodes a trial's number, a study's direction and
  Optuna's system attributes in run tags named by :data:`TRIAL_NUMBER_TAG`, :data:`STUDY_DIRECTION_TAG` and
  :data:`SYSTEM_ATTR_PREFIX`; the cloud's study storage subclasses it.
* ``mlflow.server.handlers._get_tracking_store``: the tracking store a server's own handlers use, which the
  server plugin's checks must read exactly as the handler will (:func:`tracking_store`).
* The environment ``mlflow server`` hands its uvicorn workers (the stores' ``_MLFLOW_SERVER_*`` variables and
  ``_MLFLOW_SGI_NAME``, which decides whether the ``basic-auth`` app is built for FastAPI): what a test server in a
  thread sets before it builds an app (:func:`server_environment`).
* ``mlflow.server.auth`` reads its configuration once, when it is imported, and sizes its caches from it (its
  ``auth_config``, its credential cache): a test server in a thread, started after something else imported it,
  imports it again (:func:`reimport_auth`).
"""
from __future__ import annotations

from typing import Any

__all__ = ["CHECKED", "TRIAL_NUMBER_TAG", "STUDY_DIRECTION_TAG", "SYSTEM_ATTR_PREFIX", "storage_client",
           "storage_experiment", "tracking_store", "server_environment", "reimport_auth"]

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


def server_environment(backend_store_uri: str, artifacts_destination: str) -> dict[str, str]:
    """What ``mlflow server --backend-store-uri URI --artifacts-destination DIR`` (uvicorn, proxied artifacts) sets
    in its workers' environment."""
    import uuid

    from mlflow.environment_variables import _MLFLOW_IN_JOB_EXECUTOR, _MLFLOW_SERVER_BOOT_ID, _MLFLOW_SGI_NAME
    from mlflow.server.constants import (
        ARTIFACT_ROOT_ENV_VAR,
        ARTIFACTS_DESTINATION_ENV_VAR,
        BACKEND_STORE_URI_ENV_VAR,
        SERVE_ARTIFACTS_ENV_VAR,
    )

    return {BACKEND_STORE_URI_ENV_VAR: backend_store_uri, ARTIFACT_ROOT_ENV_VAR: "mlflow-artifacts:/",
            ARTIFACTS_DESTINATION_ENV_VAR: artifacts_destination, SERVE_ARTIFACTS_ENV_VAR: "true",
            _MLFLOW_SGI_NAME.name: "uvicorn", _MLFLOW_IN_JOB_EXECUTOR.name: "false",
            _MLFLOW_SERVER_BOOT_ID.name: uuid.uuid4().hex, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def reimport_auth() -> None:
    """Run ``mlflow.server.auth`` again in the environment of now (``MLFLOW_AUTH_CONFIG_PATH``): its configuration,
    store and caches are those an app built afterwards in this process uses. Nothing to do before that module is
    first imported (it reads the environment of then). Its names keep their identity: a reload runs the module
    again in the same namespace, which functions imported from it before still read."""
    import importlib
    import sys

    auth = sys.modules.get("mlflow.server.auth")
    if auth is not None:
        importlib.reload(auth)
