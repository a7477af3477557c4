"""Predict-to-Learn (P2L): KL divergence between L1-normalised feature means, optionally with a size prior."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tfp_mlflow.selectors._base import FingerprintSelector, PreparedSources, nonnegative_l1, xlogx
from tfp_mlflow.selectors._registry import register_selector
from tfp_mlflow.task import Task

__all__ = ["P2L", "P2LSize"]


class P2L(FingerprintSelector):
    """``KL(mu_T / |mu_T|_1 || mu_S / |mu_S|_1)`` (the comparison of the paper's Supplementary Table 4).

    A source with a zero mean where the target's is positive is at distance ``inf`` (ranked last).
    """

    def _prepare(self, sources: Iterator[Task], count: int, prepared: PreparedSources) -> None:
        means = np.stack([fp.means for fp in self._fingerprints(sources, prepared)])
        normalised = nonnegative_l1(means, "a source's feature means")
        with np.errstate(divide="ignore"):
            prepared.arrays.update(log_means=np.log(normalised))

    def _distances(self, target: Task, prepared: PreparedSources) -> np.ndarray:
        a = nonnegative_l1(self._target(target, prepared).means, f"target {target.name!r}'s feature means")
        log_b = prepared.arrays["log_means"]                           # (N, m), -inf where a source mean is 0
        support = a > 0
        cross = log_b[:, support] @ a[support]                         # sum_i a_i log b_i over a's support
        return xlogx(a).sum() - cross


class P2LSize(P2L):
    """P2L with the original source-size prior: affinity ``1.5 * (-z(d)) + 1.0 * z(boxcox(n_S))``.

    ``z`` standardises over this target's sources (the target itself and non-finite distances excluded);
    the returned distance is the negated affinity. With fewer than three usable sources the prior is dropped.
    """

    joinable = False   # z-scores over the whole set of sources
    similarity_weight = 1.5
    size_weight = 1.0

    def _distances(self, target: Task, prepared: PreparedSources) -> np.ndarray:
        distance = super()._distances(target, prepared)
        usable = np.isfinite(distance) & (np.asarray(prepared.names) != target.name)
        affinity = np.full(distance.shape, -np.inf)
        if usable.sum() < 3:
            affinity[usable] = -distance[usable]
            return -affinity
        affinity[usable] = self.similarity_weight * -_zscore(distance[usable])
        sizes = prepared.num_images[usable].astype(np.float64)
        if (sizes > 0).all() and np.ptp(sizes) > 0:
            import scipy.stats  # 0.7 s to import: not on `import tfp_mlflow`, only here

            affinity[usable] += self.size_weight * _zscore(scipy.stats.boxcox(sizes)[0])
        return -affinity


def _zscore(values: np.ndarray) -> np.ndarray:
    spread = values.std()
    return np.zeros_like(values) if spread == 0 else (values - values.mean()) / spread


@register_selector("p2l", "KL divergence of L1-normalised feature means (Predict-to-Learn, no size prior)")
def p2l() -> P2L:
    return P2L()


@register_selector("p2l-size", "P2L with the original source-size prior (1.5 z-similarity + 1.0 z-boxcox size)")
def p2l_size() -> P2LSize:
    return P2LSize()
