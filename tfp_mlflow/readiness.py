"""Preparing a cloud for queries before the first one arrives: what a server does in the background after it
starts, so no user waits for it.

:func:`warm_up` does what a default query's preparation does, without a target: it verifies the task list, brings
every fingerprint into the local cache, prepares the default selector's stack (:mod:`tfp_mlflow.prepared`), computes
the poisoning guard's statistics and fits the track record (reading every outcome table once); then it answers one
query, with a known task's fingerprint under another name, so that every path of a query has run once in the
process (the store's first calls of each kind included). Everything it builds is kept in the local cache or in the
process, keyed by content, so the next query reads it. Torch-free.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

from tfp_mlflow.cloud.base import KnowledgeStore
from tfp_mlflow.evidence import fit_track_record
from tfp_mlflow.guard import fingerprint_stats
from tfp_mlflow.prepared import prepared_sources
from tfp_mlflow.recommend import recommend
from tfp_mlflow.selectors import DEFAULT_SELECTOR, get_selector

__all__ = ["Prepared", "warm_up", "WARM_UP_QUERY"]

#: The name of the query :func:`warm_up` answers (a task of that name would only be left out of the warm-up).
WARM_UP_QUERY = "tfp-warm-up-query"


@dataclass(frozen=True)
class Prepared:
    """What :func:`warm_up` prepared: tasks, fingerprinted tasks, outcome rows of the track record, seconds."""

    tasks: int
    fingerprinted: int
    outcomes: int
    seconds: float


def warm_up(cloud: KnowledgeStore, selector: str = DEFAULT_SELECTOR) -> Prepared:
    """Prepare what a query with ``selector`` reads (see the module); returns what it prepared."""
    started = time.perf_counter()
    tasks = cloud.conforming(cloud.tasks())
    chooser = get_selector(selector)
    ranked = [t for t in tasks if t.has_fingerprint] if chooser.needs_fingerprint else tasks
    outcomes = 0
    if ranked:
        if chooser.needs_fingerprint:
            prepared_sources(cloud, chooser, ranked)
        fingerprint_stats(cloud, tasks)
        evidence = fit_track_record(cloud, ranked, None, selector)
        outcomes = evidence.outcomes if evidence is not None else 0
        if chooser.needs_fingerprint:
            probe = replace(cloud.fingerprint(ranked[0]), name=WARM_UP_QUERY)
            recommend(cloud, probe, name=WARM_UP_QUERY, selector=selector, log=False)
    return Prepared(tasks=len(tasks), fingerprinted=sum(t.has_fingerprint for t in tasks), outcomes=outcomes,
                    seconds=time.perf_counter() - started)
