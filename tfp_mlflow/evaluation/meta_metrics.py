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

__all__ = ["META_METRICS", "WIN_RATE_METRICS", "Case", "affinities_from_distances", "top_k", "top_k_positions",
           "top_k_score", "weighted_tau", "weighted_tau_of"]

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
    return affinities.index[top_k_positions(affinities.to_numpy(dtype=float), k)].tolist()


def top_k_positions(affinities: np.ndarray, k: int) -> np.ndarray:
    """:func:`top_k` on an array: the positions of the ``k`` highest affinities, NaN never suggested."""
    known = np.flatnonzero(~np.isnan(affinities))
    return known[np.argsort(-affinities[known], kind="stable")[:k]]


def top_k_score(metric: str, suggested: list[str], outcomes: pd.Series, baseline: float,
                mode: str = "avg") -> float:
    """Score of the suggested sources under one meta metric (``avg``: mean over shots, ``best``: best shot).

    ``outcomes`` are the target's measured performances after transfer from every valid source (NaN: not run).
    """
    return Case(outcomes.to_numpy(dtype=float), baseline).score(metric, outcomes.index.get_indexer(suggested), mode)


class Case:
    """One case's measured outcomes (an array over its valid sources, NaN: not run) and baseline, scoring any
    selector's suggestions given as positions into that array (-1: a source without a measured outcome)."""

    def __init__(self, outcomes: np.ndarray, baseline: float):
        self.outcomes, self.baseline = outcomes, float(baseline)
        self._padded = np.append(outcomes, np.nan)   # position -1: not measured
        self._percentiles: np.ndarray | None = None

    def percentiles(self) -> np.ndarray:
        """Each outcome's rank among the measured ones as a fraction (ties averaged; NaN where not measured)."""
        if self._percentiles is None:
            known = ~np.isnan(self._padded)
            self._percentiles = np.full(len(self._padded), np.nan)
            if known.any():
                self._percentiles[known] = scipy.stats.rankdata(self._padded[known]) / known.sum()
        return self._percentiles

    def score(self, metric: str, suggested: np.ndarray, mode: str = "avg") -> float:
        """:func:`top_k_score` of the suggestions at positions ``suggested``."""
        if mode not in ("avg", "best"):
            raise ValueError(f"mode must be avg or best, got {mode!r}")
        if metric == "percentile":
            ranks = self.percentiles()[suggested]
            return _nan_reduce(ranks, np.mean if mode == "avg" else np.max)
        performances = self._padded[suggested]
        values = np.array([_nan_reduce(performances, np.max)]) if mode == "best" else performances
        if metric == "gain":
            return float(np.mean(values > self.baseline)) if len(values) else float("nan")
        if metric == "improvement":
            return float(np.mean(values - self.baseline)) if len(values) else float("nan")
        if metric == "regret":
            oracle = _nan_reduce(self.outcomes, np.max)
            source_gap, performance_gap = np.abs(oracle - values), 1 - np.minimum(oracle, values)
            with np.errstate(divide="ignore", invalid="ignore"):
                scores = np.where((performance_gap == 0) & (source_gap == 0), 0.0, 1 - source_gap / performance_gap)
            return float(np.mean(scores)) if len(scores) else float("nan")
        raise ValueError(f"unknown top-k meta metric {metric!r}")


def _nan_reduce(values: np.ndarray, reduce) -> float:
    """``reduce`` over the values that are not NaN (pandas' ``skipna``), NaN when none is."""
    known = values[~np.isnan(values)]
    return float(reduce(known)) if len(known) else float("nan")


def weighted_tau(affinities: pd.Series, outcomes: pd.Series) -> float:
    """Hyperbolically weighted Kendall tau between affinities and outcomes over sources where both are known."""
    both = pd.concat([affinities, outcomes], axis=1, join="inner")
    return weighted_tau_of(both.iloc[:, 0].to_numpy(dtype=float), both.iloc[:, 1].to_numpy(dtype=float))


def weighted_tau_of(affinities: np.ndarray, outcomes: np.ndarray) -> float:
    """:func:`weighted_tau` of two aligned arrays."""
    known = ~(np.isnan(affinities) | np.isnan(outcomes))
    if known.sum() < 2:
        return float("nan")
    return float(scipy.stats.weightedtau(affinities[known], outcomes[known])[0])
