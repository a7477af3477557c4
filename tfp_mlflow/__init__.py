"""tfp-mlflow: task fingerprinting on an MLflow knowledge cloud.

The core (fingerprints, specs, selectors, ranking, the cloud, recommendations) imports no torch, so a tracking server
can host it cheaply. The workflows (:func:`recommend_for`, :func:`tune_for`, :func:`rank_models`) are imported on first
use; those that extract features or train import torch when called.

>>> import tfp_mlflow
>>> tfp_mlflow.recommend_for.__module__
'tfp_mlflow.workflows.recommending'
"""
from tfp_mlflow._version import __version__
from tfp_mlflow.builder import FingerprintBuilder, merge
from tfp_mlflow.errors import BadInputError, CloudError, SpecMismatchError, TfpError
from tfp_mlflow.fingerprint import Fingerprint
from tfp_mlflow.ranking import RankedSource, rank_order, rank_sources
from tfp_mlflow.selectors import Selector, describe_selector, get_selector, list_selectors, register_selector
from tfp_mlflow.spec import FingerprintSpec, default_spec
from tfp_mlflow.task import Task

__all__ = ["__version__", "TfpError", "BadInputError", "SpecMismatchError", "CloudError", "Fingerprint",
           "FingerprintBuilder", "merge", "FingerprintSpec", "default_spec", "Task", "Selector", "register_selector",
           "get_selector", "list_selectors", "describe_selector", "RankedSource", "rank_sources", "rank_order",
           "recommend_for", "tune_for", "rank_models", "QueryOptions", "StudyPlan", "log_task", "log_result",
           "warm_start", "harvest"]

#: Imported on first use: the workflows and their option types pull in MLflow (and Optuna).
_LAZY = {"recommend_for": "tfp_mlflow.workflows", "tune_for": "tfp_mlflow.workflows",
         "rank_models": "tfp_mlflow.workflows", "QueryOptions": "tfp_mlflow.recommend",
         "StudyPlan": "tfp_mlflow.tune.study", "log_task": "tfp_mlflow.workflows.own_runs",
         "log_result": "tfp_mlflow.workflows.own_runs", "warm_start": "tfp_mlflow.workflows.warm_start",
         "harvest": "tfp_mlflow.workflows.harvesting"}


def __getattr__(name: str):
    """The workflows, imported lazily (they pull in MLflow; importing ``tfp_mlflow`` stays light)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tfp_mlflow' has no attribute {name!r}")
