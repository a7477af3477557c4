"""Fingerprints made: :class:`FingerprintBuilder` streams features into one (memory does not grow with the number of
draws), :func:`merge` adds the fingerprints of disjoint shards of one task's draws into the fingerprint of all."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from tfp_mlflow._version import __version__
from tfp_mlflow.errors import BadInputError, SpecMismatchError
from tfp_mlflow.fingerprint import Fingerprint
from tfp_mlflow.spec import FingerprintSpec, check_same_spec

__all__ = ["FingerprintBuilder", "merge"]


class FingerprintBuilder:
    """Accumulates features batch by batch into a fingerprint; memory does not grow with the number of draws.

    Example
    -------
    >>> builder = FingerprintBuilder(spec)                           # doctest: +SKIP
    >>> for batch in batches: builder.update(batch)                  # (n_batch, m) arrays
    >>> fingerprint = builder.build(name="my_task", num_images=120)
    """

    def __init__(self, spec: FingerprintSpec, *, second_moments: bool = False) -> None:
        self.spec = spec
        m = spec.num_features
        self.counts_ = {v: np.zeros((m, b), dtype=np.int64) for v, b in spec.variants.items()}
        self.feature_sum_ = np.zeros(m, dtype=np.float64)
        self.second_moments_ = np.zeros((m, m), dtype=np.float64) if second_moments else None
        self.num_draws_ = 0

    def update(self, features: np.ndarray) -> None:
        """Add a batch of features of shape (n, m)."""
        features = np.asarray(features, dtype=np.float64)
        for variant, counts in self.spec.bin(features).items():
            self.counts_[variant] += counts
        self.feature_sum_ += features.sum(axis=0)
        if self.second_moments_ is not None:
            self.second_moments_ += features.T @ features
        self.num_draws_ += features.shape[0]

    def build(self, *, name: str, keywords: Sequence[str] = (), num_images: int = 0, num_classes: int = 0,
              class_counts: Mapping[str, int] | None = None, seed: int | None = None,
              **extra: Any) -> Fingerprint:
        """The fingerprint of everything added so far."""
        if self.num_draws_ == 0:
            raise BadInputError("no features were added; nothing to fingerprint")
        # No creation time: the same draw must give a byte-identical file.
        extra = {"tfp_version": __version__, **extra}
        return Fingerprint(counts=self.counts_, feature_sum=self.feature_sum_, num_draws=self.num_draws_,
                           spec_id=self.spec.id, name=name, keywords=tuple(keywords), num_images=num_images,
                           num_classes=num_classes, class_counts=dict(class_counts or {}), seed=seed,
                           second_moments=self.second_moments_,
                           extra=extra)


def merge(*fingerprints: Fingerprint) -> Fingerprint:
    """Combine fingerprints of disjoint shards of one task's draws into the fingerprint of all draws.

    Counts and draw numbers add exactly; feature sums (and second moments) add up to floating-point rounding.
    All parts must share the spec, the task name and the variants.
    """
    if not fingerprints:
        raise BadInputError("merge needs at least one fingerprint")
    first = fingerprints[0]
    check_same_spec({f"shard {i} ({fp.name!r})": fp.spec_id for i, fp in enumerate(fingerprints)})
    for fp in fingerprints[1:]:
        if fp.name != first.name:
            raise BadInputError(f"cannot merge shards of different tasks ({first.name!r} and {fp.name!r})")
        if fp.variants != first.variants:
            raise SpecMismatchError(f"cannot merge shards with variants {first.variants} and {fp.variants}")
        if (fp.second_moments is None) != (first.second_moments is None):
            raise BadInputError("cannot merge shards where only some carry second moments; re-extract alike")
    counts = {v: np.sum([fp.counts[v] for fp in fingerprints], axis=0) for v in first.variants}
    moments = (None if first.second_moments is None else
               np.sum([fp.second_moments for fp in fingerprints if fp.second_moments is not None], axis=0))
    extra = {k: v for k, v in first.extra.items() if k != "shard"}
    return replace(first, counts=counts, feature_sum=np.sum([fp.feature_sum for fp in fingerprints], axis=0),
                   num_draws=sum(fp.num_draws for fp in fingerprints), second_moments=moments, extra=extra)
