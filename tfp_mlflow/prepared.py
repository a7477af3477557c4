"""A fingerprint selector's sources, prepared from a cloud once per cloud version and shared by every query.

:func:`prepared_sources` asks the store only what its contract offers (its spec, its tasks' fingerprints, its local
cache): preparing is the selector's work (:meth:`~tfp_mlflow.selectors.FingerprintSelector.prepare`), the cache
key is this module's, and the store keeps no selector state.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from tfp_mlflow.cloud.base import KnowledgeStore
from tfp_mlflow.cloud.records import LazyTasks
from tfp_mlflow.cloud.store import CloudTask
from tfp_mlflow.selectors import PreparedSources, Selector

__all__ = ["prepared_sources"]


def prepared_sources(cloud: KnowledgeStore, selector: Selector, tasks: Sequence[CloudTask]) -> PreparedSources:
    """The tasks prepared for a fingerprint selector, from the cloud's local cache when these versions were seen.

    The key covers the selector, its parameters, the cloud's spec and each task's run, checksum and ranking fields,
    so any contribution gives a new key. Fingerprints are loaded one at a time (only the variant the selector
    reads), after the missing ones were fetched several at once.
    """
    identity = [repr(selector), cloud.spec_id(), [(t.name, t.run_id, t.fingerprint_sha256, t.num_images,
                                                   t.intrinsic_dim) for t in tasks]]
    key = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]

    def build() -> PreparedSources:
        # A cold query waits on the network: the snapshot, then the missing fingerprints several at once.
        cloud.prefetch(tasks)
        return selector.prepare(LazyTasks(cloud, tasks, selector.variants or ("small",), selector.needs_moments))
    return cloud.cache.prepared(key, build)
