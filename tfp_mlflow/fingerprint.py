"""Fingerprint: a task summarised by per-feature histograms of frozen-backbone features (file format v1).

A fingerprint keeps integer bin **counts** per variant (not only normalised rows) and the per-feature **sum**, so
fingerprints of shards of one dataset merge into the fingerprint of the whole. See ``docs/fingerprint-format.md``.
"""
from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from tfp_mlflow._npz import json_member, read_json_member, read_npz, write_npz_atomic
from tfp_mlflow.errors import BadInputError, SpecMismatchError
from tfp_mlflow.spec import FingerprintSpec

__all__ = ["Fingerprint", "FINGERPRINT_FORMAT_VERSION", "validate_task_name", "validate_keywords"]

FINGERPRINT_FORMAT_VERSION = 1
MAX_KEYWORDS = 64
MAX_KEYWORD_LENGTH = 64
#: Bounds on a fingerprint read without its spec (``tfp inspect``): no backbone tfp supports has more features,
#: no spec more bins, so a file declaring more is refused before anything is decompressed.
MAX_FEATURES = 4096
MAX_BINS = 4096
#: Most draws a fingerprint may claim (10,000 is the default; counts beyond this cannot be real).
MAX_DRAWS = 10**9
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+:-]{0,127}$")


def validate_task_name(name: Any) -> str:
    """A task name: 1-128 characters of letters, digits, space and ``_.+:-``, starting with a letter or digit."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise BadInputError(f"task name {name!r} is invalid: use 1-128 letters, digits, spaces or _.+:- "
                            f"(starting with a letter or digit)")
    return name


def task_name_from(text: str) -> str:
    """A valid task name made from any text (a folder's or a dataset's name): other characters become ``_``."""
    cleaned = re.sub(r"[^A-Za-z0-9 _.+:-]", "_", str(text)).replace("..", "_").strip("_ .") or "task"
    return cleaned[:128] if cleaned[0].isalnum() else f"t{cleaned}"[:128]


def validate_keywords(keywords: Any) -> tuple[str, ...]:
    """Keywords: at most 64 distinct non-empty strings of at most 64 characters, lower-cased and stripped."""
    if isinstance(keywords, str):
        keywords = [k for k in keywords.split(",")]
    if not isinstance(keywords, (list, tuple)):
        raise BadInputError(f"keywords must be a list of strings, got {type(keywords).__name__}")
    if len(keywords) > MAX_KEYWORDS:
        raise BadInputError(f"{len(keywords)} keywords given; at most {MAX_KEYWORDS} are allowed")
    cleaned: list[str] = []
    for keyword in keywords:
        if not isinstance(keyword, str) or not keyword.strip() or len(keyword) > MAX_KEYWORD_LENGTH:
            raise BadInputError(f"keyword {keyword!r} is invalid: keywords are non-empty strings of at most "
                                f"{MAX_KEYWORD_LENGTH} characters")
        keyword = keyword.strip().lower()
        if keyword not in cleaned:
            cleaned.append(keyword)
    return tuple(cleaned)


@dataclass(frozen=True, eq=False)
class Fingerprint:
    """Per-feature histograms of one task's features under one spec.

    Parameters
    ----------
    counts : mapping of variant name to int64 array of shape (m, b)
        Number of draws whose feature ``f`` fell into bin ``j``; every row sums to ``num_draws``.
    feature_sum : array of shape (m,)
        Sum over draws of each feature (``means = feature_sum / num_draws``).
    num_draws : int
        Number of images drawn (with replacement) through the backbone.
    spec_id : str
        Id of the :class:`~tfp_mlflow.spec.FingerprintSpec` the counts were binned with.
    name : str
        Task name.
    keywords : tuple of str
        Modality, anatomy, entities (for the ``manual`` selector and people).
    num_images, num_classes : int
        Size of the task's training split and its number of classes.
    class_counts : mapping of str to int
        Images per class label.
    seed : int or None
        Seed of the draw.
    second_moments : array of shape (m, m) or None
        Opt-in sum over draws of ``v v^T`` (for the FID selector; it reveals more than the histograms).
    extra : mapping
        Other metadata (tfp version, creation time, shard) kept as written.
    """

    counts: Mapping[str, np.ndarray]
    feature_sum: np.ndarray
    num_draws: int
    spec_id: str
    name: str
    keywords: tuple[str, ...] = ()
    num_images: int = 0
    num_classes: int = 0
    class_counts: Mapping[str, int] = field(default_factory=dict)
    seed: int | None = None
    second_moments: np.ndarray | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_arrays(self.counts, self.feature_sum, self.num_draws, self.second_moments, "fingerprint")
        validate_task_name(self.name)
        object.__setattr__(self, "keywords", validate_keywords(list(self.keywords)))
        counts = {variant: np.array(array, dtype=np.int64) for variant, array in self.counts.items()}
        feature_sum = np.array(self.feature_sum, dtype=np.float64)
        moments = None if self.second_moments is None else np.array(self.second_moments, dtype=np.float64)
        for array in (*counts.values(), feature_sum, moments):
            if array is not None:
                array.flags.writeable = False
        object.__setattr__(self, "num_draws", int(self.num_draws))
        object.__setattr__(self, "feature_sum", feature_sum)
        object.__setattr__(self, "second_moments", moments)
        object.__setattr__(self, "counts", MappingProxyType(counts))
        object.__setattr__(self, "class_counts", MappingProxyType({str(k): int(v)
                                                                   for k, v in dict(self.class_counts).items()}))
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    # -- derived views ----------------------------------------------------------------------------------------
    @property
    def num_features(self) -> int:
        """``m``, the number of features."""
        return int(self.feature_sum.shape[0])

    @property
    def variants(self) -> tuple[str, ...]:
        """Names of the bin variants held (e.g. ``("large", "small")``)."""
        return tuple(sorted(self.counts))

    def histogram(self, variant: str) -> np.ndarray:
        """Normalised histograms of shape (m, b): each row sums to 1 (the paper's ``P``)."""
        return self.counts_of(variant) / float(self.num_draws)

    def counts_of(self, variant: str) -> np.ndarray:
        """Raw counts of one variant, shape (m, b); a clear error if the variant is absent."""
        if variant not in self.counts:
            raise BadInputError(f"fingerprint {self.name!r} has no {variant!r} variant (it has "
                                f"{', '.join(self.variants)}); re-fingerprint with a spec that includes it")
        return self.counts[variant]

    @property
    def means(self) -> np.ndarray:
        """Feature means ``mu``, shape (m,)."""
        return self.feature_sum / float(self.num_draws)

    @property
    def covariance(self) -> np.ndarray:
        """Unbiased feature covariance, shape (m, m); needs second moments (opt-in at extraction)."""
        if self.second_moments is None:
            raise BadInputError(f"fingerprint {self.name!r} carries no second moments; re-fingerprint with "
                                f"--moments to use the FID selector")
        if self.num_draws < 2:
            raise BadInputError(f"fingerprint {self.name!r} has fewer than 2 draws; no covariance exists")
        mu = self.means
        return (self.second_moments - self.num_draws * np.outer(mu, mu)) / (self.num_draws - 1)

    def check_spec(self, spec: FingerprintSpec, where: str | None = None) -> None:
        """Raise :class:`SpecMismatchError` unless this fingerprint was binned with ``spec``."""
        where = where or f"fingerprint {self.name!r}"
        if self.spec_id != spec.id:
            raise SpecMismatchError(f"{where} has spec {self.spec_id} but spec {spec.id} is required; "
                                    f"re-fingerprint it with that spec")
        if self.num_features != spec.num_features:
            raise SpecMismatchError(f"{where} has {self.num_features} features but spec {spec.id} has "
                                    f"{spec.num_features}")
        for variant, counts in self.counts.items():
            if variant not in spec.variants:
                raise SpecMismatchError(f"{where} holds variant {variant!r}, which spec {spec.id} does not define")
            if spec.variants.get(variant) != counts.shape[1]:
                raise SpecMismatchError(f"{where}: variant {variant!r} has {counts.shape[1]} bins but spec "
                                        f"{spec.id} defines {spec.variants.get(variant)}")

    def check_conforms(self, spec: FingerprintSpec, where: str | None = None) -> None:
        """:meth:`check_spec`, and every variant the spec defines is present (what a cloud accepts)."""
        where = where or f"fingerprint {self.name!r}"
        self.check_spec(spec, where)
        missing = set(spec.variants) - set(self.counts)
        if missing:
            raise SpecMismatchError(f"{where} lacks variant {', '.join(sorted(missing))} of spec {spec.id}; "
                                    f"re-fingerprint it with that spec")

    # -- files ------------------------------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """The JSON metadata stored in the file (format version, spec id, task description, provenance)."""
        return {**dict(self.extra), "format_version": FINGERPRINT_FORMAT_VERSION, "spec_id": self.spec_id,
                "name": self.name, "keywords": list(self.keywords), "num_images": int(self.num_images),
                "num_classes": int(self.num_classes), "class_counts": dict(self.class_counts),
                "num_draws": int(self.num_draws), "seed": self.seed}

    def save(self, path: str | os.PathLike) -> Path:
        """Write format v1 (``.npz``); atomic: a reader never sees a half-written file."""
        arrays = {f"counts_{variant}": counts for variant, counts in self.counts.items()}
        arrays["feature_sum"] = self.feature_sum
        if self.second_moments is not None:
            arrays["second_moments"] = self.second_moments
        arrays["meta"] = json_member(self.metadata())
        return write_npz_atomic(path, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike, spec: FingerprintSpec | None = None,
             variants: Sequence[str] | None = None, moments: bool = True) -> Fingerprint:
        """Read and validate a fingerprint file; with ``spec``, also check it was made with that spec.

        ``variants`` (default: all) and ``moments`` limit what is decompressed, for fast bulk loading.
        Raises :class:`~tfp_mlflow.errors.BadInputError` with a one-line message naming the file and the problem.
        """
        where = f"fingerprint file {str(path)!r}"
        skip = set() if moments else {"second_moments"}
        if variants is not None:
            # A requested variant that the file lacks surfaces as histogram()'s clear error.
            skip |= {name for name in _member_names(path)
                     if name.startswith("counts_") and name.removeprefix("counts_") not in variants}
        arrays = read_npz(path, kind="fingerprint", required={"meta", "feature_sum"}, optional={"second_moments"},
                          optional_prefix="counts_", skip=frozenset(skip),
                          check_headers=lambda headers: check_layout(headers, spec, where))
        meta = read_json_member(arrays, "meta", where)
        counts = {key.removeprefix("counts_"): value for key, value in arrays.items() if key.startswith("counts_")}
        try:
            fingerprint = _from_parts(counts, arrays["feature_sum"], arrays.get("second_moments"), meta)
        except BadInputError as exc:
            raise BadInputError(f"{where}: {exc}") from None
        if spec is not None:
            fingerprint.check_spec(spec, where)
        return fingerprint


def check_layout(headers: Mapping[str, tuple[tuple[int, ...], np.dtype]], spec: FingerprintSpec | None,
                 where: str) -> None:
    """Refuse a fingerprint file whose declared array layout does not conform, before anything is decompressed.

    With ``spec``: exactly its feature count, every variant it defines with its number of bins, nothing else.
    Without: at most :data:`MAX_FEATURES` features and :data:`MAX_BINS` bins. Counts must be integers of at most
    8 bytes, sums and moments floats of at most 8 bytes, the metadata a short string.
    """
    feature_sum = headers.get("feature_sum")
    if feature_sum is None or len(feature_sum[0]) != 1 or feature_sum[1].kind != "f" or feature_sum[1].itemsize > 8:
        raise BadInputError(f"{where}: feature_sum must be a 1-d float array of at most 8 bytes per value, the file "
                            f"declares {feature_sum[0] if feature_sum else None} of {feature_sum and feature_sum[1]}")
    m = feature_sum[0][0]
    limit = spec.num_features if spec is not None else MAX_FEATURES
    if m != limit if spec is not None else not 1 <= m <= limit:
        raise SpecMismatchError(f"{where} declares {m} features; " + (
            f"spec {spec.id} has {spec.num_features}" if spec is not None else f"at most {MAX_FEATURES} are read"))
    meta = headers.get("meta")
    if meta is not None and (meta[1].kind != "U" or meta[1].itemsize > 4 * 4 * 1024 * 1024 or meta[0] != ()):
        raise BadInputError(f"{where}: meta must be a JSON string of at most 4 MB")
    variants = {name.removeprefix("counts_"): layout for name, layout in headers.items() if name.startswith("counts_")}
    for variant, (shape, dtype) in variants.items():
        bins = spec.variants.get(variant) if spec is not None else None
        if spec is not None and bins is None:
            raise SpecMismatchError(f"{where} holds variant {variant!r}, which spec {spec.id} does not define")
        if dtype.kind not in "iu" or dtype.itemsize > 8:
            raise BadInputError(f"{where}: counts of {variant!r} must be an integer array, got {dtype}")
        if len(shape) != 2 or shape[0] != m or (shape[1] != bins if bins else not 2 <= shape[1] <= MAX_BINS):
            raise SpecMismatchError(f"{where}: counts of {variant!r} are declared {shape}, expected "
                                    f"({m}, {bins if bins else f'2 to {MAX_BINS}'})")
    if spec is not None and set(spec.variants) - set(variants):
        missing = ", ".join(sorted(set(spec.variants) - set(variants)))
        raise SpecMismatchError(f"{where} lacks variant {missing} of spec {spec.id}; re-fingerprint it with that spec")
    moments = headers.get("second_moments")
    if moments is not None and (moments[0] != (m, m) or moments[1].kind != "f" or moments[1].itemsize > 8):
        raise BadInputError(f"{where}: second_moments must be a float array of shape ({m}, {m}), the file declares "
                            f"{moments[0]} of {moments[1]}")


def _member_names(path: str | os.PathLike) -> set[str]:

    try:
        with zipfile.ZipFile(path) as archive:
            return {info.filename.removesuffix(".npy") for info in archive.infolist()}
    except (zipfile.BadZipFile, OSError, EOFError):
        return set()  # read_npz reports the problem


_META_TYPES: dict[str, tuple[type, ...]] = {
    "format_version": (int,), "spec_id": (str,), "name": (str,), "keywords": (list,), "num_images": (int,),
    "num_classes": (int,), "class_counts": (dict,), "num_draws": (int,), "seed": (int, type(None)),
}


def _from_parts(counts: dict[str, np.ndarray], feature_sum: np.ndarray, second_moments: np.ndarray | None,
                meta: dict[str, Any]) -> Fingerprint:
    if meta.get("format_version") != FINGERPRINT_FORMAT_VERSION:
        raise BadInputError(f"format version {meta.get('format_version')!r} is not supported (this tfp reads "
                            f"version {FINGERPRINT_FORMAT_VERSION})")
    for key, types in _META_TYPES.items():
        if key not in meta:
            raise BadInputError(f"metadata lacks {key!r}")
        if not isinstance(meta[key], types) or isinstance(meta[key], bool):
            raise BadInputError(f"metadata {key!r} must be {' or '.join(t.__name__ for t in types)}, got "
                                f"{type(meta[key]).__name__}")
    if meta["num_images"] < 0 or meta["num_classes"] < 0:
        raise BadInputError("metadata num_images and num_classes must be non-negative")
    class_counts = meta["class_counts"]
    if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in class_counts.values()):
        raise BadInputError("metadata class_counts must map labels to non-negative integers")
    if class_counts and sum(class_counts.values()) != meta["num_images"]:
        raise BadInputError(f"metadata class_counts sum to {sum(class_counts.values())} but num_images is "
                            f"{meta['num_images']}")
    extra = {k: v for k, v in meta.items() if k not in _META_TYPES}
    return Fingerprint(counts=counts, feature_sum=feature_sum, num_draws=meta["num_draws"],
                       spec_id=meta["spec_id"], name=validate_task_name(meta["name"]),
                       keywords=validate_keywords(meta["keywords"]), num_images=meta["num_images"],
                       num_classes=meta["num_classes"], class_counts=class_counts, seed=meta["seed"],
                       second_moments=second_moments, extra=extra)


def _check_arrays(counts: Mapping[str, np.ndarray], feature_sum: np.ndarray, num_draws: int,
                  second_moments: np.ndarray | None, where: str) -> None:
    """Validate shapes, dtypes and invariants in place (converting to canonical dtypes)."""
    if (isinstance(num_draws, bool) or not isinstance(num_draws, (int, np.integer))
            or not 1 <= num_draws <= MAX_DRAWS):
        raise BadInputError(f"{where}: num_draws must be an integer from 1 to {MAX_DRAWS:,}, got {num_draws!r}")
    if not counts:
        raise BadInputError(f"{where} holds no histogram counts")
    if not isinstance(feature_sum, np.ndarray) or feature_sum.ndim != 1 or feature_sum.dtype.kind != "f":
        raise BadInputError(f"{where}: feature_sum must be a 1-d float array")
    m = feature_sum.shape[0]
    if not np.isfinite(feature_sum).all():
        raise BadInputError(f"{where}: feature_sum contains NaN or infinity")
    if feature_sum.dtype.itemsize > 8:
        raise BadInputError(f"{where}: feature_sum must be float64 or narrower")
    for variant, array in counts.items():
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "iu":
            raise BadInputError(f"{where}: counts of {variant!r} must be an integer array, got "
                                f"{getattr(array, 'dtype', type(array).__name__)}")
        if array.ndim != 2 or array.shape[0] != m or array.shape[1] < 2:
            raise BadInputError(f"{where}: counts of {variant!r} have shape {array.shape}, expected ({m}, b>=2)")
        if array.dtype.itemsize > 8:
            raise BadInputError(f"{where}: counts of {variant!r} must be integers of at most 8 bytes")
        if array.dtype.kind == "i" and (array < 0).any():
            raise BadInputError(f"{where}: counts of {variant!r} contain negative values")
        if array.size and array.max() > num_draws:
            # Checked before summing: a uint64 2**64-1 would wrap around to -1 in an int64 sum.
            raise BadInputError(f"{where}: counts of {variant!r} hold {int(array.max())} in one bin, more than "
                                f"num_draws={num_draws}")
        sums = array.sum(axis=1, dtype=np.int64)
        if (sums != num_draws).any():
            bad = int(np.flatnonzero(sums != num_draws)[0])
            raise BadInputError(f"{where}: counts of {variant!r} row {bad} sums to {int(sums[bad])}, not "
                                f"num_draws={num_draws}")
    if second_moments is not None and (
            not isinstance(second_moments, np.ndarray) or second_moments.shape != (m, m)
            or second_moments.dtype.kind != "f" or not np.isfinite(second_moments).all()):
        raise BadInputError(f"{where}: second_moments must be a finite float array of shape ({m}, {m})")
