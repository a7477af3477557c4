"""FingerprintSpec: everything that must be identical for two fingerprints to be comparable (docs/method.md §2.5).

A spec fixes the backbone (name and weights checksum), the image pipeline (resize, crop, normalisation,
augmentation), the default number of draws, the bin variants and the per-feature bin edges ``lo``/``hi``. It
belongs to a cloud, not to a task. Its id is a hash of that content, so two specs with equal ids bin identically.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from tfp_mlflow._npz import json_member, read_json_member, read_npz, write_npz_atomic
from tfp_mlflow.errors import BadInputError, SpecMismatchError, TfpError

__all__ = ["FingerprintSpec", "SPEC_FORMAT_VERSION", "STANDARD_VARIANTS", "check_same_spec", "default_spec"]

#: Largest uncompressed spec file read (4,096 features' edges and the definition take well under 1 MB): a hostile
#: spec declaring a gigabyte is refused from its headers.
SPEC_MAX_BYTES = 8 * 2**20

SPEC_FORMAT_VERSION = 1
#: The paper's two standard variants: bins per feature histogram.
STANDARD_VARIANTS: Mapping[str, int] = MappingProxyType({"small": 100, "large": 1000})
DEFAULT_AUGMENTATION = "resize-random-crop-hflip"


@dataclass(frozen=True, eq=False)
class FingerprintSpec:
    """How features are drawn and binned; immutable, identified by :attr:`id`.

    Parameters
    ----------
    backbone : str
        timm model name of the frozen feature extractor, e.g. ``"tf_efficientnet_lite0"``.
    weights_sha256 : str
        SHA-256 of the weights file the backbone was loaded from (``""`` if unknown, e.g. synthetic specs).
    lo, hi : ndarray of shape (m,)
        Lower and upper bin edge of each of the ``m`` features; values are clipped into ``[lo, hi]``.
    input_size : int
        Side of the random crop fed to the backbone.
    resize : int
        Side images are resized to before cropping (the paper: 256).
    mean, std : tuple of 3 floats
        Normalisation of the backbone (from its timm pretrained config).
    samples : int
        Default number of draws with replacement per fingerprint (the paper: 10,000).
    variants : mapping of str to int
        Bin count per variant name (default ``{"small": 100, "large": 1000}``).
    augmentation : str
        Name of the draw-time augmentation (resize, random crop, horizontal flip).
    provenance : mapping
        How the edges were calibrated (reference tasks, quantiles). Informative only: not part of the id.
    """

    backbone: str
    weights_sha256: str
    lo: np.ndarray
    hi: np.ndarray
    input_size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    samples: int = 10_000
    variants: Mapping[str, int] = field(default_factory=lambda: dict(STANDARD_VARIANTS))
    augmentation: str = DEFAULT_AUGMENTATION
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        lo = np.ascontiguousarray(self.lo, dtype=np.float64)
        hi = np.ascontiguousarray(self.hi, dtype=np.float64)
        if lo.ndim != 1 or lo.shape != hi.shape or lo.size == 0:
            raise BadInputError(f"spec edges must be two 1-d arrays of equal length, got shapes {lo.shape} and "
                                f"{hi.shape}")
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise BadInputError("spec edges contain NaN or infinity; recalibrate on finite features")
        if (hi < lo).any():
            raise BadInputError(f"spec has {int((hi < lo).sum())} features whose upper edge lies below the lower "
                                f"edge; recalibrate")
        variants = {str(k): int(v) for k, v in dict(self.variants).items()}
        if not variants or any(b < 2 for b in variants.values()):
            raise BadInputError(f"spec variants must map names to at least 2 bins, got {variants}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise BadInputError("spec mean/std must be three numbers each, std positive")
        for name in ("input_size", "resize", "samples"):
            if int(getattr(self, name)) < 1:
                raise BadInputError(f"spec {name} must be a positive integer")
        lo.flags.writeable = False
        hi.flags.writeable = False
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)
        object.__setattr__(self, "variants", MappingProxyType(variants))
        object.__setattr__(self, "mean", tuple(float(x) for x in self.mean))
        object.__setattr__(self, "std", tuple(float(x) for x in self.std))
        object.__setattr__(self, "provenance", MappingProxyType(dict(self.provenance)))

    # -- identity ---------------------------------------------------------------------------------------------
    @property
    def num_features(self) -> int:
        """``m``, the number of backbone features (length of ``lo``)."""
        return int(self.lo.shape[0])

    def _definition(self) -> dict[str, Any]:
        return {"format_version": SPEC_FORMAT_VERSION, "backbone": self.backbone,
                "weights_sha256": self.weights_sha256, "input_size": int(self.input_size),
                "resize": int(self.resize), "mean": list(self.mean), "std": list(self.std),
                "samples": int(self.samples), "variants": dict(sorted(self.variants.items())),
                "augmentation": self.augmentation, "num_features": self.num_features}

    @property
    def id(self) -> str:
        """Stable id: first 16 hex digits of SHA-256 over the canonical definition and the edges' bytes."""
        digest = hashlib.sha256(json.dumps(self._definition(), sort_keys=True).encode())
        digest.update(self.lo.astype("<f8").tobytes())
        digest.update(self.hi.astype("<f8").tobytes())
        return digest.hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FingerprintSpec) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return (f"FingerprintSpec(id={self.id!r}, backbone={self.backbone!r}, m={self.num_features}, "
                f"variants={dict(self.variants)})")

    # -- binning ----------------------------------------------------------------------------------------------
    def bin(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Histogram counts of a batch of features for every variant.

        Each feature is clipped into ``[lo_f, hi_f]`` and split into ``b`` uniform bins; a value equal to ``hi_f``
        falls in the last bin (the ``torch.histc`` convention). A degenerate feature (``lo_f == hi_f``) puts
        everything in its first bin.

        Parameters
        ----------
        features : array of shape (n, m)

        Returns
        -------
        dict of variant name to int64 array of shape (m, b)
        """
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise BadInputError(f"features must have shape (n, {self.num_features}) for spec {self.id}, got "
                                f"{features.shape}")
        if not np.isfinite(features).all():
            raise BadInputError("features contain NaN or infinity; the backbone produced invalid activations")
        width = self.hi - self.lo
        unit = np.divide(np.clip(features, self.lo, self.hi) - self.lo, width,
                         out=np.zeros_like(features), where=width > 0)
        m = self.num_features
        counts: dict[str, np.ndarray] = {}
        for name, bins in self.variants.items():
            index = np.minimum((unit * bins).astype(np.int64), bins - 1)
            index += np.arange(m, dtype=np.int64) * bins
            counts[name] = np.bincount(index.ravel(), minlength=m * bins).reshape(m, bins)
        return counts

    # -- construction -----------------------------------------------------------------------------------------
    @classmethod
    def calibrate(cls, features: np.ndarray, *, quantiles: tuple[float, float] = (0.05, 0.95),
                  **definition: Any) -> FingerprintSpec:
        """Build a spec whose edges are per-feature quantiles of a reference feature matrix.

        Parameters
        ----------
        features : array of shape (n, m)
            Stacked features of the reference tasks (docs/method.md §2.5: 5 % and 95 % quantiles).
        quantiles : (float, float)
            Lower and upper quantile.
        **definition
            The other :class:`FingerprintSpec` fields (``backbone``, ``weights_sha256``, ``input_size``, ...).
        """
        features = np.asarray(features, dtype=np.float64)
        low_q, high_q = quantiles
        if not 0.0 <= low_q < high_q <= 1.0:
            raise BadInputError(f"quantiles must satisfy 0 <= low < high <= 1, got {quantiles}")
        if features.ndim != 2 or features.shape[0] < 2:
            raise BadInputError(f"calibration needs a feature matrix of shape (n >= 2, m), got {features.shape}")
        if not np.isfinite(features).all():
            raise BadInputError("calibration features contain NaN or infinity")
        lo, hi = np.quantile(features, [low_q, high_q], axis=0)
        provenance = dict(definition.pop("provenance", {}))
        provenance.update(quantiles=[low_q, high_q], calibration_samples=int(features.shape[0]))
        return cls(lo=lo, hi=hi, provenance=provenance, **definition)

    # -- files ------------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the spec as ``.npz`` (edges as arrays, definition as JSON); atomic."""
        meta = {**self._definition(), "id": self.id, "provenance": dict(self.provenance)}
        return write_npz_atomic(path, {"lo": self.lo, "hi": self.hi, "spec": json_member(meta)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> FingerprintSpec:
        """Read and validate a spec file written by :meth:`save` (no pickle, id re-checked)."""
        where = f"spec file {str(path)!r}"
        arrays = read_npz(path, kind="spec", required={"lo", "hi", "spec"}, max_bytes=SPEC_MAX_BYTES)
        meta = read_json_member(arrays, "spec", where)
        if meta.get("format_version") != SPEC_FORMAT_VERSION:
            raise BadInputError(f"{where} has format version {meta.get('format_version')!r}; this tfp reads "
                                f"version {SPEC_FORMAT_VERSION}")
        for name in ("lo", "hi"):
            if arrays[name].dtype.kind != "f":
                raise BadInputError(f"{where}: {name!r} must be floating point, got {arrays[name].dtype}")
        try:
            spec = cls(backbone=str(meta["backbone"]), weights_sha256=str(meta["weights_sha256"]),
                       lo=arrays["lo"], hi=arrays["hi"], input_size=int(meta["input_size"]),
                       resize=int(meta["resize"]), mean=tuple(meta["mean"]), std=tuple(meta["std"]),
                       samples=int(meta["samples"]), variants=dict(meta["variants"]),
                       augmentation=str(meta["augmentation"]), provenance=dict(meta.get("provenance", {})))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, BadInputError):
                raise BadInputError(f"{where}: {exc}") from None
            raise BadInputError(f"{where} has an invalid definition ({exc!r}); re-create it") from None
        if meta.get("id") not in (None, spec.id):
            raise BadInputError(f"{where} claims id {meta['id']} but its content hashes to {spec.id}; the file was "
                                f"altered")
        return spec


def check_same_spec(spec_ids: Mapping[str, str]) -> str:
    """Return the common spec id of named items, or raise :class:`SpecMismatchError` naming the odd one out."""
    ids = sorted(set(spec_ids.values()))
    if len(ids) > 1:
        first = next(iter(spec_ids.items()))
        odd = next((name, sid) for name, sid in spec_ids.items() if sid != first[1])
        raise SpecMismatchError(f"{odd[0]} has spec {odd[1]} but {first[0]} has spec {first[1]}; fingerprints "
                                f"of different specs are never compared: re-fingerprint with one spec")
    if not ids:
        raise BadInputError("nothing to compare: give at least one fingerprint")
    return ids[0]


@lru_cache(maxsize=1)
def default_spec() -> FingerprintSpec:
    """The spec shipped with the package: ``tf_efficientnet_lite0``, edges calibrated on the synthetic demo tasks.

    ``scripts/make_default_spec.py`` made it; the shipped file, not the recipe, defines its id (recomputing on
    another CPU can differ in the last bits).
    """
    path = resources.files("tfp_mlflow") / "data" / "default-spec.npz"
    if not path.is_file():
        raise TfpError("the shipped default spec is missing from the installation; reinstall tfp-mlflow")
    with resources.as_file(path) as local:
        return FingerprintSpec.load(local)
