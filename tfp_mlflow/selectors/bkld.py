"""Binned Kullback-Leibler divergence (bKLD), the paper's distance (docs/method.md §3).

``d(S, T) = sum_i w_i KL(p_i || softmax(q_i)) / sum_i w_i`` with ``p_i`` the target's and ``q_i`` the source's
normalised histogram of feature ``i``. Because every ``p_i`` sums to 1,
``KL(p_i || softmax(q_i)) = sum_j p_ij log p_ij - p_i . q_i + logsumexp(q_i)``: one target against N sources
needs the stacked source histograms, their cached log-sum-exp and one contraction over (m, b).
"""
from __future__ import annotations

from typing import Iterator, Literal

import numpy as np

from tfp_mlflow.errors import BadInputError
from tfp_mlflow.selectors._base import FingerprintSelector, PreparedSources, nonnegative_l1, xlogx
from tfp_mlflow.selectors._registry import register_selector
from tfp_mlflow.task import Task

__all__ = ["BinnedKLD"]

Weighting = Literal["target-softmax", "source-l1", "uniform"]


class BinnedKLD(FingerprintSelector):
    """bKLD between the target's histograms and the softmax of each source's histograms.

    Parameters
    ----------
    variant : str
        Histogram variant (``"small"``: 100 bins, ``"large"``: 1000 bins).
    weighting : {"target-softmax", "source-l1", "uniform"}
        Feature weights ``w``: ``softmax(mu_T)``, ``mu_S / sum(mu_S)`` or all ones.

    Notes
    -----
    With weights normalised to sum 1, ``d_n = w.h - sum_ij w_i p_ij q_nij + w.LSE_n``. Target-side weights fold
    into the target vector; source weights are known when preparing, so they are multiplied into the stacked
    source histograms. Either way a query is one matrix-vector product over the (n_sources, m * b) float64 stack
    (as many bytes as the int64 counts), reading every source value once.
    """

    def __init__(self, variant: str = "small", weighting: Weighting = "target-softmax") -> None:
        if weighting not in ("target-softmax", "source-l1", "uniform"):
            raise BadInputError(f"unknown bKLD weighting {weighting!r}; use target-softmax, source-l1 or uniform")
        self.variant = variant
        self.variants = (variant,)
        self.weighting = weighting

    def _prepare(self, sources: Iterator[Task], count: int, prepared: PreparedSources) -> None:
        stack: np.ndarray | None = None
        lse = weights = None
        for index, fingerprint in enumerate(self._fingerprints(sources, prepared)):
            histogram = fingerprint.histogram(self.variant)                         # (m, b)
            if stack is None:
                shape = histogram.shape
                stack = np.empty((count, histogram.size))
                lse = np.empty((count, shape[0]))
                weights = np.empty((count, shape[0])) if self.weighting == "source-l1" else None
            elif histogram.shape != shape:
                raise BadInputError(f"source {fingerprint.name!r} has histograms of shape {histogram.shape}, "
                                    f"expected {shape}")
            # q lies in [0, 1], so exp cannot overflow: no max-shift needed.
            lse[index] = np.log(np.exp(histogram).sum(axis=1))
            if weights is not None:
                weights[index] = nonnegative_l1(fingerprint.means, f"source {fingerprint.name!r}'s feature means")
                histogram *= weights[index][:, None]
            stack[index] = histogram.ravel()
        prepared.arrays.update(histograms=stack, shape=shape)
        if weights is None:
            prepared.arrays["logsumexp"] = lse
        else:
            prepared.arrays.update(weights=weights, weighted_logsumexp=np.einsum("nm,nm->n", weights, lse))

    def _distances(self, target: Task, prepared: PreparedSources) -> np.ndarray:
        fingerprint = self._target(target, prepared)
        p = fingerprint.histogram(self.variant)                                     # (m, b)
        if p.shape != prepared.arrays["shape"]:
            raise BadInputError(f"target {target.name!r} has histograms of shape {p.shape}, the sources "
                                f"{prepared.arrays['shape']}")
        entropy_term = xlogx(p).sum(axis=1)                                          # (m,) sum_j p log p
        stack = prepared.arrays["histograms"]                                        # (N, m * b)
        if self.weighting == "source-l1":
            weights = prepared.arrays["weights"]                                     # (N, m), rows sum to 1
            return weights @ entropy_term - stack @ p.ravel() + prepared.arrays["weighted_logsumexp"]
        if self.weighting == "uniform":
            w = np.full(p.shape[0], 1.0 / p.shape[0])
        else:
            mu = fingerprint.means
            w = np.exp(mu - mu.max())
            w /= w.sum()
        return entropy_term @ w - stack @ (p * w[:, None]).ravel() + prepared.arrays["logsumexp"] @ w


@register_selector("bkld-small-target", "bKLD, 100 bins, features weighted by softmax of the target's means")
def bkld_small_target() -> BinnedKLD:
    return BinnedKLD(variant="small", weighting="target-softmax")


@register_selector("bkld-large-source", "bKLD, 1000 bins, features weighted by the source's L1-normalised means")
def bkld_large_source() -> BinnedKLD:
    return BinnedKLD(variant="large", weighting="source-l1")


@register_selector("bkld-large-unweighted", "bKLD, 1000 bins, all features weighted equally")
def bkld_large_unweighted() -> BinnedKLD:
    return BinnedKLD(variant="large", weighting="uniform")
