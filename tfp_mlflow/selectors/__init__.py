"""Task selectors: rank the sources of a cloud for a target (docs/method.md §3-§4).

One registry: :func:`get_selector` builds a distance selector by name, :func:`fit_selector` fits a learned one from
measured outcomes, :func:`list_selectors` lists them (``tfp selectors``).
"""
from tfp_mlflow.selectors._base import FingerprintSelector, JoinedSources, PreparedSources, Selector
from tfp_mlflow.selectors._registry import (
    DISTANCE,
    LEARNED,
    describe_selector,
    fit_selector,
    get_selector,
    list_selectors,
    register_learned_selector,
    register_selector,
    selector_kind,
    selector_needs,
)
from tfp_mlflow.selectors.bkld import BinnedKLD
from tfp_mlflow.selectors.fid import FID
from tfp_mlflow.selectors.manual import ManualSelector
from tfp_mlflow.selectors.p2l import P2L, P2LSize
from tfp_mlflow.selectors.vdna import VDNA

#: The selector a query uses unless told otherwise (the paper's best fingerprint selector).
DEFAULT_SELECTOR = "bkld-small-target"

register_learned_selector(
    "track-record", "sources ordered by how well they transferred to other targets (leave-one-target-out), with a "
    "distance where that validates better; fitted from outcomes, per scenario",
    "tfp_mlflow.selectors.track_record:TrackRecord")

__all__ = ["DEFAULT_SELECTOR", "Selector", "FingerprintSelector", "PreparedSources", "JoinedSources",
           "register_selector", "register_learned_selector", "get_selector", "fit_selector", "list_selectors",
           "describe_selector", "selector_kind", "selector_needs", "DISTANCE", "LEARNED", "BinnedKLD", "ManualSelector",
           "P2L", "P2LSize", "VDNA", "FID"]
