"""Rank arithmetic of the learned selectors, on numpy arrays: the columns' top rows, centred percentile ranks,
the nearest rows per column. Each is exactly what its pandas or ``argsort`` spelling gives, without its cost in the
inner validation's loops (one call per inner target and rule)."""
from __future__ import annotations

import numpy as np

__all__ = ["top_rows", "centred_rank", "average_rank", "nearest"]


def top_rows(values: np.ndarray, k: int) -> np.ndarray:
    """The rows of the ``k`` largest values of each column, largest first, ties by row: exactly
    ``np.argsort(-values, axis=0, kind="stable")[:k]``, without sorting whole columns."""
    n = values.shape[0]
    if k >= n or np.isnan(values).any():
        return np.argsort(-values, axis=0, kind="stable")[:k]
    kth = -np.partition(-values, k - 1, axis=0)[k - 1]                  # each column's k-th largest value
    above = values > kth
    tied = values == kth
    room = k - above.sum(axis=0)                                        # how many ties each column takes
    chosen = above | (tied & (np.cumsum(tied, axis=0) <= room))         # ties: the lowest rows first
    columns, flat_rows = np.nonzero(chosen.T)                           # rows ascending within each column
    rows = flat_rows.reshape(values.shape[1], k)
    picked = values[rows, columns.reshape(values.shape[1], k)]
    return np.take_along_axis(rows, np.argsort(-picked, axis=1, kind="stable"), axis=1).T


def centred_rank(values: np.ndarray) -> np.ndarray:
    """Percentile rank among the known values, centred on 0 (in [-0.5, 0.5]); unknown values 0."""
    out = np.zeros(len(values))
    known = np.isfinite(values)
    if known.sum() >= 2:
        out[known] = (average_rank(values[known]) - 0.5) / known.sum() - 0.5
    return out


def average_rank(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given the mean of their ranks: ``pandas.Series.rank(method="average")`` on finite values,
    without building a Series (the inner validation ranks one column per inner target)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])     # first position of each run of ties
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def nearest(closeness: np.ndarray, k: int) -> np.ndarray:
    """Per column, the ``k`` rows of highest closeness (``-inf``: not eligible), as a boolean mask."""
    mask = np.zeros(closeness.shape, dtype=bool)
    if closeness.size == 0:
        return mask
    order = np.argsort(-closeness, axis=0, kind="stable")[:k]
    columns = np.broadcast_to(np.arange(closeness.shape[1]), order.shape)
    mask[order, columns] = True
    return mask & np.isfinite(closeness)
