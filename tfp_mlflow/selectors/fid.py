"""Fréchet distance between Gaussians fitted to the two tasks' features (FID)."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tfp_mlflow.selectors._base import FingerprintSelector, PreparedSources
from tfp_mlflow.selectors._registry import register_selector
from tfp_mlflow.task import Task

__all__ = ["FID"]


class FID(FingerprintSelector):
    """``|mu_S - mu_T|^2 + tr(S_S) + tr(S_T) - 2 tr((S_S S_T)^{1/2})``.

    Needs second moments in both fingerprints (opt-in at extraction, ``--moments``). The trace of the matrix
    square root is ``sum sqrt(eig(A S_S A))`` with ``A = S_T^{1/2}``, so each target is decomposed once and each
    source costs one symmetric eigenvalue problem.
    """

    needs_moments = True

    def _prepare(self, sources: Iterator[Task], count: int, prepared: PreparedSources) -> None:
        means, covariances = [], []
        for fingerprint in self._fingerprints(sources, prepared):
            means.append(fingerprint.means)
            covariances.append(fingerprint.covariance)
        prepared.arrays.update(means=np.stack(means), covariances=np.stack(covariances))

    def _distances(self, target: Task, prepared: PreparedSources) -> np.ndarray:
        fingerprint = self._target(target, prepared)
        mu_t, cov_t = fingerprint.means, fingerprint.covariance
        eigenvalues, eigenvectors = np.linalg.eigh(cov_t)
        root_t = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T
        out = np.empty(len(prepared))
        for index, (mu_s, cov_s) in enumerate(zip(prepared.arrays["means"], prepared.arrays["covariances"])):
            product = root_t @ cov_s @ root_t
            trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0, None)).sum()
            out[index] = ((mu_s - mu_t) ** 2).sum() + np.trace(cov_s) + np.trace(cov_t) - 2 * trace_root
        return out


@register_selector("fid", "Fréchet distance of feature Gaussians (needs fingerprints with second moments)")
def fid() -> FID:
    return FID()
