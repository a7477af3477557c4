"""Binned Kullback-Leibler divergence (bKLD), the paper's distance (docs/method.md §3).

``d(S, T) = sum_i w_i KL(p_i || softmax(q_i)) / sum_i w_i`` with ``p_i`` the target's and ``q_i`` the source's
normalised histogram of feature ``i``. Because every ``p_i`` sums to 1,
``KL(p_i || softmax(q_i)) = sum_j p_ij log p_ij - p_i . q_i + logsumexp(q_i)``: one target against N sources
needs the sources' counts, their cached log-sum-exp and one contraction over (m, b), here over the compact integer
stack of :mod:`tfp_mlflow.selectors._stack` with each source's ``1 / num_draws`` applied after it.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np

from tfp_mlflow.errors import BadInputError
from tfp_mlflow.selectors._base import FingerprintSelector, PreparedSources, nonnegative_l1, xlogx
from tfp_mlflow.selectors._registry import register_selector
from tfp_mlflow.selectors._stack import CountStack
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
    With weights normalised to sum 1, ``d_n = w.h - sum_ij w_i p_ij c_nij / D_n + w.LSE_n`` (``c`` the counts,
    ``D_n`` the source's draws). Target-side weights fold into the target vector; source weights (N, m) are kept
    beside the counts and applied per bin inside the contraction. The counts stay integers (uint16/uint32, dense or
    sparse: :class:`~tfp_mlflow.selectors._stack.CountStack`), so the stack takes 2 bytes per bin or less instead
    of the 8 of float64 histograms, and the distances are the same to rounding.
    """

    def __init__(self, variant: str = "small", weighting: Weighting = "target-softmax") -> None:
        if weighting not in ("target-softmax", "source-l1", "uniform"):
            raise BadInputError(f"unknown bKLD weighting {weighting!r}; use target-softmax, source-l1 or uniform")
        self.variant = variant
        self.variants = (variant,)
        self.weighting = weighting

    def _prepare(self, sources: Iterator[Task], count: int, prepared: PreparedSources) -> None:
        stack: CountStack | None = None
        shape: tuple[int, ...] = ()
        lse, draws = np.empty((count, 0)), np.empty(count)
        weights: np.ndarray | None = None
        for index, fingerprint in enumerate(self._fingerprints(sources, prepared)):
            counts = fingerprint.counts_of(self.variant)                            # (m, b) int64
            if stack is None:
                shape = counts.shape
                stack = CountStack(count, counts.size)
                lse = np.empty((count, shape[0]))
                weights = np.empty((count, shape[0])) if self.weighting == "source-l1" else None
            elif counts.shape != shape:
                raise BadInputError(f"source {fingerprint.name!r} has histograms of shape {counts.shape}, "
                                    f"expected {shape}")
            # q lies in [0, 1], so exp cannot overflow: no max-shift needed.
            lse[index] = np.log(np.exp(counts / float(fingerprint.num_draws)).sum(axis=1))
            draws[index] = fingerprint.num_draws
            if weights is not None:
                weights[index] = nonnegative_l1(fingerprint.means, f"source {fingerprint.name!r}'s feature means")
            stack.add(counts)
        assert stack is not None, "prepare() refuses an empty source set"
        prepared.arrays.update({f"stack_{key}": value for key, value in stack.finish().items()})
        prepared.arrays.update(shape=shape, draws=draws)
        if weights is None:
            prepared.arrays["logsumexp"] = lse
        else:
            weighted = np.einsum("nm,nm->n", weights, lse)  # type: ignore[arg-type]  # numpy's stubs
            prepared.arrays.update(weights=weights, weighted_logsumexp=weighted)

    def _distances(self, target: Task, prepared: PreparedSources) -> np.ndarray:
        fingerprint = self._target(target, prepared)
        p = fingerprint.histogram(self.variant)                                     # (m, b)
        shape = tuple(prepared.arrays["shape"])
        if p.shape != shape:
            raise BadInputError(f"target {target.name!r} has histograms of shape {p.shape}, the sources {shape}")
        entropy_term = xlogx(p).sum(axis=1)                                          # (m,) sum_j p log p
        expanded = self._expanded(prepared)
        stack = {key.removeprefix("stack_"): value for key, value in prepared.arrays.items()
                 if key.startswith("stack_")}
        draws = prepared.arrays["draws"]
        if self.weighting == "source-l1":
            weights = prepared.arrays["weights"]                                     # (N, m), rows sum to 1
            cross = (expanded @ p.ravel() if expanded is not None else
                     CountStack.contract(stack, p.size, p, features=p.shape[0], row_weights=weights) / draws)
            return weights @ entropy_term - cross + prepared.arrays["weighted_logsumexp"]
        if self.weighting == "uniform":
            w = np.full(p.shape[0], 1.0 / p.shape[0])
        else:
            mu = fingerprint.means
            w = np.exp(mu - mu.max())
            w /= w.sum()
        vector = (p * w[:, None]).ravel()
        cross = expanded @ vector if expanded is not None else CountStack.contract(stack, p.size, vector) / draws
        return entropy_term @ w - cross + prepared.arrays["logsumexp"] @ w

    def _expanded(self, prepared: PreparedSources) -> np.ndarray | None:
        """The float64 histograms (source weights folded in), built at the first query and kept with the prepared
        sources while they take at most :data:`~tfp_mlflow.selectors._stack.EXPAND_BYTES`; else ``None``."""
        from tfp_mlflow.selectors import _stack

        shape = tuple(prepared.arrays["shape"])
        width = shape[0] * shape[1]
        if len(prepared) * width * 8 > _stack.EXPAND_BYTES:
            return None
        if "float64" not in prepared.memo:
            stack = {key.removeprefix("stack_"): value for key, value in prepared.arrays.items()
                     if key.startswith("stack_")}
            prepared.memo["float64"] = CountStack.expand(stack, width, prepared.arrays["draws"], features=shape[0],
                                                         row_weights=prepared.arrays.get("weights"))
        return prepared.memo["float64"]


@register_selector("bkld-small-target", "bKLD, 100 bins, features weighted by softmax of the target's means")
def bkld_small_target() -> BinnedKLD:
    return BinnedKLD(variant="small", weighting="target-softmax")


@register_selector("bkld-large-source", "bKLD, 1000 bins, features weighted by the source's L1-normalised means")
def bkld_large_source() -> BinnedKLD:
    return BinnedKLD(variant="large", weighting="source-l1")


@register_selector("bkld-large-unweighted", "bKLD, 1000 bins, all features weighted equally")
def bkld_large_unweighted() -> BinnedKLD:
    return BinnedKLD(variant="large", weighting="uniform")
