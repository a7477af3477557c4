"""Task selectors: rank the sources of a cloud for a target (docs/method.md §3-§4).

One registry: :func:`get_selector` builds a selector by name, :func:`list_selectors` lists them (``tfp selectors``).
"""
from tfp_mlflow.selectors._base import FingerprintSelector, JoinedSources, PreparedSources, Selector
from tfp_mlflow.selectors._registry import describe_selector, get_selector, list_selectors, register_selector
from tfp_mlflow.selectors.bkld import BinnedKLD
from tfp_mlflow.selectors.fid import FID
from tfp_mlflow.selectors.manual import ManualSelector
from tfp_mlflow.selectors.p2l import P2L, P2LSize
from tfp_mlflow.selectors.vdna import VDNA

#: The selector a query uses unless told otherwise (the paper's best fingerprint selector).
DEFAULT_SELECTOR = "bkld-small-target"

__all__ = ["DEFAULT_SELECTOR", "Selector", "FingerprintSelector", "PreparedSources", "JoinedSources",
           "register_selector", "get_selector", "list_selectors", "describe_selector", "BinnedKLD", "ManualSelector",
           "P2L", "P2LSize", "VDNA", "FID"]
