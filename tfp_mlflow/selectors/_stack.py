"""Compact, exact stacks of source histogram counts: what a bKLD query reads, N sources at a time.

A fingerprint's histograms are integer counts. Stored as float64 histograms (the first layout), N sources of m
features and b bins take ``8 N m b`` bytes: 10 GB for 1,000 sources of the 1,000-bin variant. :class:`CountStack`
keeps the counts as they are instead, in whichever of two layouts is smaller for the stack at hand:

* **dense**: ``(N, m b)`` of uint16 while every count fits (fewer than 65,536 draws), else uint32;
* **sparse** (CSR): per source, the flat indices (uint32) and values of its non-zero bins, when fewer than 15 % of
  the bins are occupied (real fingerprints of the 1,000-bin variant occupy 7-9 % at 300 draws).

The per-source scale (``1 / num_draws``) is applied after the contraction, and every contraction accumulates in
float64, a chunk of sources at a time, so the distances equal the float64 path's to rounding (the tests hold them
to 1e-12 relative) while memory stays a few chunks above the stack itself. Torch-free.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tfp_mlflow.errors import BadInputError

__all__ = ["CountStack", "count_dtype", "CHUNK_BYTES", "EXPAND_BYTES"]

#: float64 working memory of one chunk of a query: small enough that a converted chunk is still in the CPU's cache
#: when BLAS reads it (10,000 sources of 128,000 bins: 0.25 s at 4 MiB, 0.62 s at 32 MiB; benchmarks/README.md).
CHUNK_BYTES = 4 * 2**20
#: The chunk where a chunk of a few rows cannot stay in cache anyway (rows wider than :data:`CHUNK_BYTES`, the
#: 1,000-bin variants), and for a gather of the target's occupied columns, where fancy indexing pays per call.
WIDE_CHUNK_BYTES = 32 * 2**20
#: Sources looked at before the layout is chosen.
SAMPLE = 16
#: Below this share of occupied bins the sparse layout is used.
SPARSE_DENSITY = 0.15
#: A stack whose float64 expansion takes at most this many bytes is expanded once and kept (queries then read it
#: at BLAS speed); larger ones are read compactly, chunk by chunk. ``TFP_EXPAND_BYTES`` overrides it.
EXPAND_BYTES = int(os.environ.get("TFP_EXPAND_BYTES", 2 * 2**30))
#: Threads a query's chunks run on (the machine's cores, at most 8).
THREADS = min(8, os.cpu_count() or 1)


def count_dtype(largest: int) -> np.dtype:
    """The narrowest unsigned type that holds every count (a count never exceeds its fingerprint's draws)."""
    if largest < 2**16:
        return np.dtype(np.uint16)
    if largest < 2**32:
        return np.dtype(np.uint32)
    raise BadInputError(f"a count of {largest:,} does not fit 32 bits; fingerprints have at most 10**9 draws")


class CountStack:
    """Builds and queries the counts of N sources, each a flat vector of ``width`` bins.

    Build with :meth:`add` (one source at a time, in order) and :meth:`finish`; the result is a dict of arrays for
    :class:`~tfp_mlflow.selectors.PreparedSources` (saved as ``.npy`` and memory-mapped back), read by
    :meth:`contract`.
    """

    def __init__(self, count: int, width: int) -> None:
        self.count, self.width = count, width
        self.sample: list[np.ndarray] = []     # the first sources, kept until the layout is chosen
        self.dense: np.ndarray | None = None
        self.layout: str | None = None
        self.added = 0
        self.largest = 0
        # sparse: flat indices and values, grown in place (amortised), and each source's end
        self.indices: np.ndarray = np.empty(0, dtype=np.uint32)
        self.values: np.ndarray = np.empty(0, dtype=np.uint16)
        self.ends = np.zeros(count, dtype=np.int64)
        self.used = 0

    def add(self, counts: np.ndarray) -> None:
        flat = np.ascontiguousarray(counts).reshape(-1)
        if flat.shape[0] != self.width:
            raise BadInputError(f"a source has {flat.shape[0]} bins in all, the others {self.width}")
        self.largest = max(self.largest, int(flat.max(initial=0)))
        if self.layout is None:
            self.sample.append(flat.copy())
            if len(self.sample) == min(SAMPLE, self.count):
                self._choose()
        else:
            self._put(self.added, flat)
        self.added += 1

    def _choose(self) -> None:
        sample, self.sample = self.sample, []
        density = sum(int(np.count_nonzero(flat)) for flat in sample) / (len(sample) * self.width)
        # Sparse costs 4 + 2 or 4 bytes per occupied bin and reads slower per bin than dense reads per cell: it wins
        # on memory below about 1/3 occupied and on time below about 1/6 (benchmarks/README.md).
        self.layout = "sparse" if density < SPARSE_DENSITY else "dense"
        if self.layout == "sparse":
            capacity = int(1.25 * density * self.count * self.width) + self.width
            self.indices = np.empty(capacity, dtype=np.uint32)
            self.values = np.empty(capacity, dtype=count_dtype(self.largest))
        for number, flat in enumerate(sample):
            self._put(number, flat)

    def _put(self, number: int, flat: np.ndarray) -> None:
        dtype = count_dtype(self.largest)
        if self.layout == "dense":
            if self.dense is None:
                self.dense = np.zeros((self.count, self.width), dtype=dtype)
            elif self.dense.dtype.itemsize < dtype.itemsize:
                self.dense = self.dense.astype(dtype)          # a count of 65,536 or more: widen once
            self.dense[number] = flat
            return
        index = np.flatnonzero(flat)
        end = self.used + len(index)
        if end > len(self.indices):                            # the sample underestimated: grow by half
            capacity = max(end, int(1.5 * len(self.indices)))
            self.indices = np.resize(self.indices, capacity)
            self.values = np.resize(self.values, capacity)
        if self.values.dtype.itemsize < dtype.itemsize:
            self.values = self.values.astype(dtype)
        self.indices[self.used:end] = index
        self.values[self.used:end] = flat[index]
        self.used = self.ends[number] = end

    def finish(self) -> dict[str, np.ndarray]:
        if self.added != self.count:
            raise RuntimeError(f"{self.added} of {self.count} sources were added")
        if self.layout is None:
            self._choose()
        if self.layout == "dense":
            assert self.dense is not None
            return {"counts": self.dense}
        indptr = np.zeros(self.count + 1, dtype=np.int64)
        indptr[1:] = self.ends
        # Views of the grown buffers (saved as .npy, then memory-mapped): no second copy is made here.
        return {"indptr": indptr, "indices": self.indices[:self.used], "values": self.values[:self.used]}

    # -- queries ------------------------------------------------------------------------------------------------
    @staticmethod
    def expand(arrays: dict, width: int, draws: np.ndarray, features: int | None = None,
               row_weights: np.ndarray | None = None) -> np.ndarray:
        """The float64 histograms ``counts[n, k] / draws[n] (* W[n, k // b])``, shape (N, width), exactly as the
        float64 path computed them: what a query reads fastest, for a stack small enough to keep in memory beside
        the compact one (see :data:`EXPAND_BYTES`)."""
        count = len(draws)
        out = np.zeros((count, width))
        if "counts" in arrays:
            def fill(start: int, stop: int) -> None:
                out[start:stop] = arrays["counts"][start:stop]
        else:
            indptr, indices, values = arrays["indptr"], arrays["indices"], arrays["values"]

            def fill(start: int, stop: int) -> None:
                for n in range(start, stop):
                    out[n, indices[indptr[n]:indptr[n + 1]]] = values[indptr[n]:indptr[n + 1]]
        _each_chunk(fill, count, 8 * width)
        out /= np.asarray(draws, dtype=np.float64)[:, None]
        if row_weights is not None:
            assert features is not None, "row weights need the number of features"
            out.reshape(count, features, -1)[...] *= row_weights[:, :, None]
        return out

    @staticmethod
    def contract(arrays: dict, width: int, vector: np.ndarray, features: int | None = None,
                 row_weights: np.ndarray | None = None) -> np.ndarray:
        """``sum_k counts[n, k] * vector[k]`` for every source ``n``, in float64.

        With ``row_weights`` of shape (N, m) and ``features = m`` (so ``width = m b``), each bin's product is also
        multiplied by its source's weight of the bin's feature: ``sum_k counts[n, k] vector[k] W[n, k // b]``.
        """
        vector = np.asarray(vector, dtype=np.float64).reshape(-1)
        if "counts" in arrays:
            return _dense(arrays["counts"], vector, features, row_weights)
        return _sparse(arrays["indptr"], arrays["indices"], arrays["values"], width, vector, features, row_weights)


def _chunks(count: int, per_row_bytes: int, chunk_bytes: int | None = None) -> Iterator[tuple[int, int]]:
    budget = chunk_bytes or (CHUNK_BYTES if per_row_bytes <= CHUNK_BYTES else WIDE_CHUNK_BYTES)
    step = max(1, budget // max(per_row_bytes, 1))
    for start in range(0, count, step):
        yield start, min(count, start + step)


def _each_chunk(work: Callable[[int, int], None], count: int, per_row_bytes: int,
                chunk_bytes: int | None = None) -> None:
    """``work(start, stop)`` over the chunks, on up to :data:`THREADS` threads (numpy's casts and BLAS release the
    GIL); each chunk writes its own slice of the output, so the result does not depend on the threads."""
    chunks = list(_chunks(count, per_row_bytes, chunk_bytes))
    threads = min(THREADS, len(chunks))
    if threads <= 1:
        for start, stop in chunks:
            work(start, stop)
        return

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda chunk: work(*chunk), chunks))


def _dense(stack: np.ndarray, vector: np.ndarray, features: int | None, row_weights: np.ndarray | None) -> np.ndarray:
    count, width = stack.shape
    out = np.empty(count)
    # Where the target leaves most bins empty, only its occupied columns are read and converted.
    occupied = np.flatnonzero(vector)
    if len(occupied) < 0.5 * width and row_weights is None:
        vector_part = vector[occupied]

        def part(start: int, stop: int) -> None:
            out[start:stop] = stack[start:stop, occupied].astype(np.float64) @ vector_part
        _each_chunk(part, count, 8 * len(occupied), WIDE_CHUNK_BYTES)
        return out

    def whole(start: int, stop: int) -> None:
        block = stack[start:stop].astype(np.float64)
        if row_weights is None:
            out[start:stop] = block @ vector
        else:
            assert features is not None, "row weights need the number of features"
            per_feature = np.einsum("cmb,mb->cm",  # type: ignore[arg-type]  # numpy's stubs
                                    block.reshape(stop - start, features, -1), vector.reshape(features, -1))
            out[start:stop] = np.einsum("cm,cm->c", per_feature, row_weights[start:stop])
    _each_chunk(whole, count, 8 * width)
    return out


def _sparse(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, width: int, vector: np.ndarray,
            features: int | None, row_weights: np.ndarray | None) -> np.ndarray:
    count = len(indptr) - 1
    out = np.zeros(count)
    bins = width // features if features else None
    average = max(1, int(indptr[-1]) // max(count, 1))

    def work(start: int, stop: int) -> None:
        lo, hi = int(indptr[start]), int(indptr[stop])
        index = indices[lo:hi]
        products = values[lo:hi] * vector[index]                      # float64
        rows = np.repeat(np.arange(stop - start), np.diff(indptr[start:stop + 1]))
        if row_weights is not None:
            products *= row_weights[start:stop][rows, index // bins]
        out[start:stop] = np.bincount(rows, weights=products, minlength=stop - start)
    _each_chunk(work, count, 24 * average)
    return out
