"""tfp-mlflow: task fingerprinting on an MLflow knowledge cloud.

The core (fingerprints, specs, selectors, ranking) imports no torch, so a tracking server can host it cheaply.
"""
from tfp_mlflow._version import __version__
from tfp_mlflow.errors import BadInputError, CloudError, SpecMismatchError, TfpError
from tfp_mlflow.fingerprint import Fingerprint, FingerprintBuilder, merge
from tfp_mlflow.ranking import RankedSource, rank_order, rank_sources
from tfp_mlflow.selectors import Selector, describe_selector, get_selector, list_selectors, register_selector
from tfp_mlflow.spec import FingerprintSpec, default_spec
from tfp_mlflow.task import Task

__all__ = ["__version__", "TfpError", "BadInputError", "SpecMismatchError", "CloudError", "Fingerprint",
           "FingerprintBuilder", "merge", "FingerprintSpec", "default_spec", "Task", "Selector", "register_selector",
           "get_selector", "list_selectors", "describe_selector", "RankedSource", "rank_sources", "rank_order"]
