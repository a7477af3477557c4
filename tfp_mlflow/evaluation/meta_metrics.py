"""Meta-metrics of one selector on one case (target, scenario, base metric, repetition), docs/method.md §6.

Each function takes the selector's affinities (higher = closer) and the measured transfer outcomes, both indexed by
the valid sources, with the reference's missing-value semantics: a suggested source without a measured outcome counts
as no gain, makes improvement and regret undefined (NaN) in "avg" mode, and is skipped by percentile and by the
"best" mode.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.stats

__all__ = ["META_METRICS", "WIN_RATE_METRICS", "affinities_from_distances", "top_k", "top_k_score",
           "weighted_tau"]

#: Every meta metric, higher is better.
META_METRICS = ("improvement", "gain", "percentile", "regret", "weightedtau")
#: Those the win rates count (Supplementary Table 4: gain is not one of them).
WIN_RATE_METRICS = ("improvement", "percentile", "regret", "weightedtau")


def affinities_from_distances(distances: pd.DataFrame) -> pd.DataFrame:
    """Distances → affinities: 0 means "not computed" (NaN), z-score the whole matrix, negate.

    Rankings per target do not change; only priors added on this scale (``p2l-size``) depend on it.
    """
    data = distances.to_numpy(dtype=float).copy()
    data[data == 0] = np.nan
    data[~np.isfinite(data)] = np.nan
    scored = scipy.stats.zscore(data, axis=None, nan_policy="omit")
    return pd.DataFrame(-np.asarray(scored), index=distances.index, columns=distances.columns)


def top_k(affinities: pd.Series, k: int) -> list[str]:
    """The ``k`` sources of highest affinity (NaN never suggested; equal affinities keep the source order)."""
    known = affinities.dropna()
    order = np.argsort(-known.to_numpy(), kind="stable")
    return known.index[order[:k]].tolist()


def top_k_score(metric: str, suggested: list[str], outcomes: pd.Series, baseline: float,
                mode: str = "avg") -> float:
    """Score of the suggested sources under one meta metric (``avg``: mean over shots, ``best``: best shot).

    ``outcomes`` are the target's measured performances after transfer from every valid source (NaN: not run).
    """
    if mode not in ("avg", "best"):
        raise ValueError(f"mode must be avg or best, got {mode!r}")
    if metric == "percentile":
        ranks = outcomes.rank(method="average", pct=True).reindex(suggested)
        return float(ranks.mean() if mode == "avg" else ranks.max())
    performances = outcomes.reindex(suggested)
    values = [performances.max()] if mode == "best" else list(performances.to_numpy(dtype=float))
    if metric == "gain":
        return float(np.mean([int(p > baseline) for p in values]))
    if metric == "improvement":
        return float(np.mean([p - baseline for p in values]))
    if metric == "regret":
        oracle = outcomes.max()
        scores = []
        for p in values:
            source_gap = abs(oracle - p)
            performance_gap = 1 - min(oracle, p)
            scores.append(0.0 if performance_gap == 0.0 == source_gap else 1 - source_gap / performance_gap)
        return float(np.mean(scores))
    raise ValueError(f"unknown top-k meta metric {metric!r}")


def weighted_tau(affinities: pd.Series, outcomes: pd.Series) -> float:
    """Hyperbolically weighted Kendall tau between affinities and outcomes over sources where both are known."""
    both = pd.concat([affinities, outcomes], axis=1, join="inner").dropna()
    if len(both) < 2:
        return float("nan")
    return float(scipy.stats.weightedtau(both.iloc[:, 0].to_numpy(), both.iloc[:, 1].to_numpy())[0])
