"""From distances to a ranking of sources, with one deterministic tie rule for every selector.

Tie rule (docs/usage.md): ascending distance; among equal distances the larger source (more samples)
first, then the larger intrinsic dimension (unknown counts as smallest), then the name in alphabetical order.
Non-finite distances come last.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from tfp_mlflow.errors import BadInputError
from tfp_mlflow.selectors import PreparedSources, Selector, get_selector
from tfp_mlflow.task import Task

__all__ = ["RankedSource", "rank_order", "rank_sources", "merge_rankings", "MERGE_RULES", "DEFAULT_MERGE_RULE"]

#: How a ranking by fingerprints and a ranking by keywords become one. ``fingerprint-first`` (the default) puts every
#: fingerprinted source, by its distance, before any keyword-only one; ``keywords-first`` the other way round;
#: ``interleave`` alternates them, fingerprinted first; ``z-score`` z-scores each signal's distances among its own
#: sources and merges by that. docs/evaluation.md has the simulation that chose the default: it has the highest win
#: rate of the four at every share of fingerprinted sources.
MERGE_RULES = ("fingerprint-first", "interleave", "keywords-first", "z-score")
DEFAULT_MERGE_RULE = "fingerprint-first"


@dataclass(frozen=True)
class RankedSource:
    """One source in a ranking: ``rank`` starts at 1; lower ``distance`` is closer."""

    rank: int
    name: str
    distance: float
    num_images: int


def rank_order(distances: np.ndarray, names: Sequence[str], num_images: np.ndarray,
               intrinsic_dims: np.ndarray | None = None) -> np.ndarray:
    """Indices that sort sources best-first under the tie rule.

    Parameters
    ----------
    distances, num_images, intrinsic_dims : arrays of shape (n_sources,)
    names : sequence of n_sources str
    """
    distances = np.asarray(distances, dtype=np.float64)
    finite = np.isfinite(distances)
    dims = np.full(len(names), -np.inf) if intrinsic_dims is None else np.nan_to_num(
        np.asarray(intrinsic_dims, dtype=np.float64), nan=-np.inf)
    name_rank = np.argsort(np.argsort(np.asarray(names, dtype=object), kind="stable"), kind="stable")
    # np.lexsort sorts by the last key first.
    return np.lexsort((name_rank, -dims, -np.asarray(num_images, dtype=np.float64),
                       np.where(finite, distances, np.inf), ~finite))


def rank_sources(selector: Selector | str, target: Task, sources: Sequence[Task] | PreparedSources, *,
                 top_k: int | None = None, exclude: Iterable[str] = ()) -> list[RankedSource]:
    """Rank ``sources`` for ``target`` with ``selector``; the target itself and ``exclude`` are left out.

    Returns the best ``top_k`` (all when ``None``) as :class:`RankedSource` records, best first.
    """
    selector = get_selector(selector) if isinstance(selector, str) else selector
    if top_k is not None and top_k < 1:
        raise BadInputError(f"top-k must be at least 1, got {top_k}")
    prepared = sources if isinstance(sources, PreparedSources) else selector.prepare(sources)
    distances = selector.distances(target, prepared)
    skip = {target.name, *exclude}
    order = [i for i in rank_order(distances, prepared.names, prepared.num_images, prepared.intrinsic_dims)
             if prepared.names[i] not in skip]
    if top_k is not None:
        order = order[:top_k]
    return [RankedSource(rank=r, name=prepared.names[i], distance=float(distances[i]),
                         num_images=int(prepared.num_images[i])) for r, i in enumerate(order, start=1)]


def merge_rankings(by_fingerprint: Sequence[tuple[str, float]], by_keywords: Sequence[tuple[str, float]],
                   rule: str = DEFAULT_MERGE_RULE) -> list[tuple[str, str]]:
    """One ranking from two best-first lists of ``(source, distance)``: ``[(source, signal), ...]``, best first,
    where ``signal`` is ``"fingerprint"`` or ``"keywords"`` (see :data:`MERGE_RULES`)."""
    if rule not in MERGE_RULES:
        raise BadInputError(f"unknown merge rule {rule!r}; choose one of {', '.join(MERGE_RULES)}")
    first = [(name, "fingerprint") for name, _ in by_fingerprint]
    second = [(name, "keywords") for name, _ in by_keywords]
    if rule == "fingerprint-first":
        return first + second
    if rule == "keywords-first":
        return second + first
    if rule == "interleave":
        merged = [item for pair in zip(first, second) for item in pair]
        return merged + first[len(second):] + second[len(first):]
    scored = []
    for ranking, labelled in ((by_fingerprint, first), (by_keywords, second)):
        values = np.array([d for _, d in ranking], dtype=np.float64)
        spread = values.std() if len(values) > 1 else 0.0
        z = (values - values.mean()) / spread if spread > 0 else np.zeros(len(values))
        scored += [(score, position, item) for position, (score, item) in enumerate(zip(z, labelled))]
    return [item for _, _, item in sorted(scored, key=lambda entry: (entry[0], entry[1], entry[2][1]))]
