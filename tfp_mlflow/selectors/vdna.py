"""VisualDNA (VDNA): mean over features of the 1-D earth mover's distance between histograms."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tfp_mlflow.selectors._base import FingerprintSelector, PreparedSources
from tfp_mlflow.selectors._registry import register_selector
from tfp_mlflow.task import Task

__all__ = ["VDNA"]

_FEATURE_CHUNK = 64


class VDNA(FingerprintSelector):
    """``mean_i sum_j |cumsum_j(p_i - q_i)|`` with both histograms L1-normalised (symmetric).

    Prepared sources hold the cumulative histograms, (m, n_sources, b); a query walks them in feature chunks so
    its temporary memory stays at ``64 * n_sources * b`` values.
    """

    def __init__(self, variant: str = "large") -> None:
        self.variant = variant
        self.variants = (variant,)

    def _prepare(self, sources: Iterator[Task], count: int, prepared: PreparedSources) -> None:
        stack: np.ndarray | None = None
        for index, fingerprint in enumerate(self._fingerprints(sources, prepared)):
            histogram = fingerprint.histogram(self.variant)
            if stack is None:
                stack = np.empty((histogram.shape[0], count, histogram.shape[1]))
            stack[:, index, :] = np.cumsum(histogram, axis=1)
        prepared.arrays["cumulative"] = stack

    def _distances(self, target: Task, prepared: PreparedSources) -> np.ndarray:
        target_cdf = np.cumsum(self._target(target, prepared).histogram(self.variant), axis=1)   # (m, b)
        stack = prepared.arrays["cumulative"]
        total = np.zeros(stack.shape[1])
        for start in range(0, stack.shape[0], _FEATURE_CHUNK):
            chunk = slice(start, start + _FEATURE_CHUNK)
            total += np.abs(stack[chunk] - target_cdf[chunk, None, :]).sum(axis=(0, 2))
        return total / stack.shape[0]


@register_selector("vdna", "VisualDNA: mean 1-D earth mover's distance of 1000-bin histograms")
def vdna() -> VDNA:
    return VDNA()
