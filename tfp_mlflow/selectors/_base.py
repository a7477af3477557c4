"""The Selector contract, the prepared-sources cache and the helpers every fingerprint selector shares."""
from __future__ import annotations

import abc
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfp_mlflow._npz import HEADER_LOCK
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.fingerprint import Fingerprint
from tfp_mlflow.spec import check_same_spec
from tfp_mlflow.task import Task

__all__ = ["Selector", "PreparedSources", "JoinedSources", "FingerprintSelector"]

PREPARED_FORMAT = "tfp.prepared/3"   # 3: bKLD stacks hold integer counts (were float64 histograms)


@dataclass
class PreparedSources:
    """Sources reduced to what one selector needs, computed once and reused for every target.

    Attributes
    ----------
    selector : str
        Name of the selector that prepared them (a prepared set is only valid for it).
    names : list of str
        Source names, in input order; all arrays below follow that order.
    num_images : ndarray of shape (n_sources,)
    intrinsic_dims : ndarray of shape (n_sources,)
        NaN where unknown.
    spec_id : str or None
        Common spec id of the source fingerprints (``None`` for selectors that use none).
    arrays : dict
        Selector-specific cached arrays (e.g. stacked histograms, their log-sum-exp).
    """

    selector: str
    names: list[str]
    num_images: np.ndarray
    intrinsic_dims: np.ndarray
    spec_id: str | None = None
    arrays: dict[str, Any] = field(default_factory=dict)
    #: What a selector derives from ``arrays`` at query time and keeps for the next query (never saved).
    memo: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def nbytes(self) -> int:
        """Memory held by the cached arrays."""
        return sum(a.nbytes for a in self.arrays.values() if isinstance(a, np.ndarray))

    def save(self, folder: str | os.PathLike) -> Path:
        """Write to a new folder (one ``.npy`` per array, ``meta.json`` for the rest), renamed into place whole.

        Plain ``.npy`` files, not an archive, so :meth:`load` can memory-map a stack of a gigabyte in milliseconds.
        """
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
        try:
            meta: dict[str, Any] = {"format": PREPARED_FORMAT, "selector": self.selector, "names": self.names,
                                    "spec_id": self.spec_id, "json": {}, "tuples": []}
            arrays = {"num_images": self.num_images, "intrinsic_dims": self.intrinsic_dims}
            for key, value in self.arrays.items():
                if isinstance(value, np.ndarray):
                    arrays[f"arrays.{key}"] = value
                else:
                    meta["json"][key] = list(value) if isinstance(value, tuple) else value
                    if isinstance(value, tuple):
                        meta["tuples"].append(key)
            for key, value in arrays.items():
                np.save(staging / f"{key}.npy", np.ascontiguousarray(value), allow_pickle=False)
            (staging / "meta.json").write_text(json.dumps(meta))  # last: a folder without it is incomplete
            os.replace(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> PreparedSources:
        """Read a folder written by :meth:`save`; arrays are read-only memory maps."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / "meta.json").read_text())
            if meta.get("format") != PREPARED_FORMAT:
                raise ValueError(f"format {meta.get('format')!r}")

            def array(key: str) -> np.ndarray:
                with HEADER_LOCK:   # a memory map: only the header is parsed here
                    return np.load(folder / f"{key}.npy", mmap_mode="r", allow_pickle=False)

            arrays: dict[str, Any] = {key: tuple(value) if key in meta["tuples"] else value
                                      for key, value in meta["json"].items()}
            for path in folder.glob("arrays.*.npy"):
                key = path.name[len("arrays."):-len(".npy")]
                arrays[key] = array(f"arrays.{key}")
            prepared = cls(selector=meta["selector"], names=list(meta["names"]), num_images=array("num_images"),
                           intrinsic_dims=array("intrinsic_dims"), spec_id=meta["spec_id"], arrays=arrays)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BadInputError(f"prepared sources in {str(folder)!r} cannot be read ({exc}); delete the folder") \
                from None
        if len(prepared.num_images) != len(prepared.names):
            raise BadInputError(f"prepared sources in {str(folder)!r} are inconsistent; delete the folder")
        return prepared


class JoinedSources(PreparedSources):
    """Several prepared sets read as one, without copying them: a cloud's set prepared once, then the parts for the
    tasks added since (:mod:`tfp_mlflow.prepared`).

    Source ``i`` is row ``index[i]`` of the parts' rows laid end to end; rows no index points at (a task since
    replaced or left out of this query) are computed and dropped. Only for selectors whose distance to one source
    depends on that source alone (:attr:`Selector.joinable`); a selector answers for each part in turn.
    """

    def __init__(self, parts: Sequence[PreparedSources], index: Sequence[int] | np.ndarray) -> None:
        index = np.asarray(index, dtype=np.int64)
        if not parts or len({p.selector for p in parts}) != 1 or len({p.spec_id for p in parts}) != 1:
            raise BadInputError("joined sources need at least one part, all of one selector and one spec")
        names = [name for part in parts for name in part.names]
        super().__init__(selector=parts[0].selector, names=[names[i] for i in index],
                         num_images=np.concatenate([p.num_images for p in parts])[index],
                         intrinsic_dims=np.concatenate([p.intrinsic_dims for p in parts])[index],
                         spec_id=parts[0].spec_id)
        self.parts, self.index = tuple(parts), index

    def save(self, folder: str | os.PathLike) -> Path:
        raise TypeError("joined sources are saved part by part (PreparedSources.save on each of .parts)")


class Selector(abc.ABC):
    """Ranks sources for a target: lower distance means closer (a better source).

    Subclasses implement :meth:`_prepare` (reduce the sources once) and :meth:`_distances` (one target against
    all prepared sources in a single vectorised call). Instances are stateless apart from their parameters and
    safe to share between threads; the returned :class:`PreparedSources` is owned by the caller.
    """

    #: Registry name, set by :func:`~tfp_mlflow.selectors.register_selector`.
    name: str = ""
    #: Whether sources and target need a fingerprint (``manual`` needs keywords only).
    needs_fingerprint: bool = True
    #: Histogram variants the selector reads (``()``: none, only means); lets callers load less.
    variants: tuple[str, ...] = ()
    #: Whether the selector reads second moments.
    needs_moments: bool = False
    #: Whether a source's distance depends on that source and the target alone, so sources prepared in several
    #: parts (:class:`JoinedSources`) give the distances the whole set would.
    joinable: bool = True

    def prepare(self, sources: Sequence[Task] | Iterable[Task]) -> PreparedSources:
        """Reduce the sources to the arrays this selector needs (done once, reused for every target).

        ``sources`` is walked exactly once, so a lazy sequence (loading each fingerprint on access) keeps only
        one source fingerprint in memory besides the prepared arrays.
        """
        # Anything sized is walked as it is (a lazy sequence stays lazy); other iterables are listed first.
        listed: Sequence[Task] = sources if isinstance(sources, Sequence) or hasattr(sources, "__len__") \
            else list(sources)  # type: ignore[assignment]
        sources, count = listed, len(listed)
        if count == 0:
            raise BadInputError(f"selector {self.name!r} needs at least one source task")
        prepared = PreparedSources(selector=self.name, names=[], num_images=np.zeros(count, dtype=np.int64),
                                   intrinsic_dims=np.full(count, np.nan))

        def walk() -> Iterator[Task]:
            for index, task in enumerate(sources):
                prepared.names.append(task.name)
                prepared.num_images[index] = task.num_images
                if task.intrinsic_dim is not None:
                    prepared.intrinsic_dims[index] = task.intrinsic_dim
                yield task

        self._prepare(walk(), count, prepared)
        if len(prepared.names) != count:
            raise RuntimeError(f"selector {self.name!r} did not consume all sources while preparing")
        return prepared

    def distances(self, target: Task, sources: Sequence[Task] | PreparedSources) -> np.ndarray:
        """Distances of shape (n_sources,) from every source to ``target`` (lower is closer)."""
        prepared = sources if isinstance(sources, PreparedSources) else self.prepare(sources)
        if prepared.selector != self.name:
            raise BadInputError(f"sources were prepared for selector {prepared.selector!r}, not {self.name!r}")
        if isinstance(prepared, JoinedSources):
            if not self.joinable:
                raise BadInputError(f"selector {self.name!r} compares each source with the others; prepare its "
                                    f"sources as one set, not in parts")
            return np.concatenate([self._distances(target, part) for part in prepared.parts])[prepared.index]
        return self._distances(target, prepared)

    def matrix(self, sources: Sequence[Task] | PreparedSources, targets: Sequence[Task]) -> np.ndarray:
        """Distance matrix of shape (n_sources, n_targets): rows sources, columns targets (as the reference)."""
        prepared = sources if isinstance(sources, PreparedSources) else self.prepare(sources)
        if not targets:
            return np.zeros((len(prepared), 0))
        return np.stack([self.distances(target, prepared) for target in targets], axis=1)

    @abc.abstractmethod
    def _prepare(self, sources: Iterator[Task], count: int, prepared: PreparedSources) -> None:
        """Consume all ``count`` sources once, filling ``prepared.arrays`` (and ``prepared.spec_id``)."""

    @abc.abstractmethod
    def _distances(self, target: Task, prepared: PreparedSources) -> np.ndarray:
        """One target against all prepared sources; shape (n_sources,)."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


class FingerprintSelector(Selector):
    """A selector on fingerprints: checks that every task has one and that all share one spec."""

    def _fingerprints(self, sources: Iterator[Task], prepared: PreparedSources) -> Iterator[Fingerprint]:
        """Yield the sources' fingerprints one at a time while checking that they share one spec."""
        for task in sources:
            fingerprint = self._require(task, "source")
            if prepared.spec_id is None:
                prepared.spec_id = fingerprint.spec_id
            check_same_spec({f"source {prepared.names[0]!r}": prepared.spec_id,
                             f"source {task.name!r}": fingerprint.spec_id})
            yield fingerprint

    def _target(self, target: Task, prepared: PreparedSources) -> Fingerprint:
        fingerprint = self._require(target, "target")
        check_same_spec({"the sources": prepared.spec_id or fingerprint.spec_id,
                         f"target {target.name!r}": fingerprint.spec_id})
        return fingerprint

    def _require(self, task: Task, role: str) -> Fingerprint:
        if task.fingerprint is None:
            raise BadInputError(f"{role} task {task.name!r} has no fingerprint; selector {self.name!r} needs one "
                                f"(attach one with `tfp contribute`, or use the manual selector)")
        return task.fingerprint


def nonnegative_l1(vectors: np.ndarray, what: str) -> np.ndarray:
    """L1-normalise the last axis of non-negative vectors; a clear error if any entry is negative or all zero."""
    if (vectors < 0).any():
        raise BadInputError(f"{what} has negative entries; this selector needs non-negative features "
                            f"(a ReLU-type backbone)")
    totals = vectors.sum(axis=-1, keepdims=True)
    if (totals <= 0).any():
        raise BadInputError(f"{what} is all zero; it cannot be normalised")
    return vectors / totals


def xlogx(values: np.ndarray) -> np.ndarray:
    """Elementwise ``x log x`` with the convention ``0 log 0 = 0``."""
    out = np.zeros_like(values, dtype=np.float64)
    np.multiply(values, np.log(values, out=np.full_like(out, -np.inf), where=values > 0), out=out,
                where=values > 0)
    return out
