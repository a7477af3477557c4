"""The compact integer stack gives the distances of the dense float64 path to 1e-12 relative, and the same ranking,
in every layout it picks (dense uint16/uint32, sparse), on random and on extracted fingerprints."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tfp_mlflow import Fingerprint, Task, get_selector
from tfp_mlflow.selectors._base import xlogx
from tfp_mlflow.selectors._stack import CHUNK_BYTES, CountStack, count_dtype

EXAMPLES = Path(__file__).resolve().parents[2] / "tfp_mlflow" / "data" / "examples"
BKLD = ("bkld-small-target", "bkld-large-source", "bkld-large-unweighted")


def dense_float64(selector, target: Task, sources: list[Task]) -> np.ndarray:
    """The first implementation: float64 histograms stacked (N, m b), source weights folded into the stack."""
    variant, weighting = selector.variant, selector.weighting
    p = target.fingerprint.histogram(variant)
    histograms = np.stack([s.fingerprint.histogram(variant) for s in sources])           # (N, m, b)
    lse = np.log(np.exp(histograms).sum(axis=2))                                         # (N, m)
    entropy = xlogx(p).sum(axis=1)
    if weighting == "source-l1":
        means = np.stack([s.fingerprint.means for s in sources])
        weights = means / means.sum(axis=1, keepdims=True)
        stack = (histograms * weights[:, :, None]).reshape(len(sources), -1)
        return weights @ entropy - stack @ p.ravel() + np.einsum("nm,nm->n", weights, lse)
    if weighting == "uniform":
        w = np.full(p.shape[0], 1.0 / p.shape[0])
    else:
        mu = target.fingerprint.means
        w = np.exp(mu - mu.max())
        w /= w.sum()
    return entropy @ w - histograms.reshape(len(sources), -1) @ (p * w[:, None]).ravel() + lse @ w


def random_tasks(count: int, m: int, draws: int, concentration: float, seed: int) -> list[Task]:
    """Tasks whose histograms are multinomial draws: a small ``concentration`` leaves most bins empty."""
    rng = np.random.default_rng(seed)
    tasks = []
    for index in range(count):
        counts = {}
        for variant, bins in (("small", 100), ("large", 1000)):
            counts[variant] = rng.multinomial(draws, rng.dirichlet(np.full(bins, concentration), size=m))
        tasks.append(Task.from_fingerprint(Fingerprint(
            counts=counts, feature_sum=rng.gamma(2.0, 1.0, size=m) * draws, num_draws=draws, spec_id="random",
            name=f"t{index}", num_images=100 + index)))
    return tasks


#: (draws, Dirichlet concentration) -> the layout and count type expected per variant (100 and 1,000 bins).
CASES = {
    (300, 0.02): {"small": ("sparse", np.uint16), "large": ("sparse", np.uint16)},       # few bins occupied
    (5_000, 5.0): {"small": ("dense", np.uint16), "large": ("dense", np.uint16)},        # every bin occupied
    (2_000_000, 0.005): {"small": ("sparse", np.uint32), "large": ("sparse", np.uint32)},  # counts past 65,535
    (2_000_000, 1.0): {"small": ("dense", np.uint32), "large": ("dense", np.uint16)},
}


@pytest.fixture(params=["compact", "expanded"])
def query_path(request, monkeypatch):
    """Queries read the compact stack chunk by chunk (over several chunks and threads), or its float64 expansion."""
    monkeypatch.setattr("tfp_mlflow.selectors._stack.CHUNK_BYTES", 50_000)
    monkeypatch.setattr("tfp_mlflow.selectors._stack.THREADS", 2)
    if request.param == "compact":
        monkeypatch.setattr("tfp_mlflow.selectors._stack.EXPAND_BYTES", 0)
    return request.param


@pytest.mark.parametrize("draws, concentration", list(CASES))
@pytest.mark.parametrize("name", BKLD)
def test_compact_stack_equals_the_dense_float64_path(name, draws, concentration, query_path):
    tasks = random_tasks(9, 6, draws, concentration, seed=draws)
    selector = get_selector(name)
    prepared = selector.prepare(tasks[1:])
    layout, dtype = CASES[draws, concentration][selector.variant]
    stored = {k: v for k, v in prepared.arrays.items() if k.startswith("stack_")}
    assert ("stack_counts" in stored) == (layout == "dense"), sorted(stored)
    assert stored.get("stack_counts", stored.get("stack_values")).dtype == dtype
    compact = selector.distances(tasks[0], prepared)
    assert ("float64" in prepared.memo) == (query_path == "expanded")
    dense = dense_float64(selector, tasks[0], tasks[1:])
    np.testing.assert_allclose(compact, dense, rtol=1e-12, atol=0)
    assert np.array_equal(np.argsort(compact, kind="stable"), np.argsort(dense, kind="stable"))


@pytest.mark.parametrize("name", [n if "small" in n else pytest.param(n, marks=pytest.mark.slow) for n in BKLD])
def test_compact_stack_equals_the_dense_path_on_extracted_fingerprints(name, tmp_path, query_path):
    """The shipped example fingerprints (real backbone features): every one against the others, saved and
    memory-mapped back as a query reads them from the cache."""
    from tfp_mlflow.selectors import PreparedSources

    tasks = [Task.from_fingerprint(Fingerprint.load(path)) for path in sorted(EXAMPLES.glob("*.npz"))]
    selector = get_selector(name)
    for i, target in enumerate(tasks):
        sources = tasks[:i] + tasks[i + 1:]
        prepared = PreparedSources.load(selector.prepare(sources).save(tmp_path / f"{name}-{i}"))
        compact = selector.distances(target, prepared)
        dense = dense_float64(selector, target, sources)
        np.testing.assert_allclose(compact, dense, rtol=1e-12, atol=0)
        assert list(np.argsort(compact, kind="stable")) == list(np.argsort(dense, kind="stable"))


def test_the_stack_takes_at_most_a_quarter_of_the_float64_bytes():
    tasks = random_tasks(8, 6, 1000, 0.02, seed=3)
    for name in BKLD:
        prepared = get_selector(name).prepare(tasks)
        bins = 100 if "small" in name else 1000
        stack = sum(v.nbytes for k, v in prepared.arrays.items() if k.startswith("stack_"))
        assert stack <= 0.25 * len(tasks) * 6 * bins * 8, (name, stack)


def test_count_types_and_a_widening_source():
    assert count_dtype(65_535) == np.uint16 and count_dtype(65_536) == np.uint32
    stack = CountStack(3, 4)
    stack.add(np.array([[9, 9], [9, 9]]))
    for counts in (np.array([[70_000, 0], [0, 70_000]]), np.array([[1, 2], [3, 4]])):
        stack.add(counts)
    arrays = stack.finish()
    dense = arrays.get("counts")
    if dense is not None:
        assert dense.dtype == np.uint32 and dense[1, 0] == 70_000
    vector = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(CountStack.contract(arrays, 4, vector), [90.0, 350_000.0, 30.0])
    assert CHUNK_BYTES >= 2**20


def test_a_sparse_stack_grows_and_widens_when_later_sources_differ_from_the_sample(monkeypatch):
    """The layout is chosen on the first sources; later ones with many more occupied bins, or a count past
    65,535, grow and widen the buffers in place and the contraction stays exact."""
    monkeypatch.setattr("tfp_mlflow.selectors._stack.SAMPLE", 2)
    rng = np.random.default_rng(4)
    rows = [np.eye(1, 500, k, dtype=np.int64)[0] * 3 for k in (0, 7)]                  # 1 of 500 bins occupied
    rows += [rng.integers(0, 5, size=500) for _ in range(3)] + [np.full(500, 70_000)]
    stack = CountStack(len(rows), 500)
    for row in rows:
        stack.add(row)
    arrays = stack.finish()
    assert set(arrays) == {"indptr", "indices", "values"} and arrays["values"].dtype == np.uint32
    vector = rng.random(500)
    expected = np.array([float(np.dot(row.astype(np.float64), vector)) for row in rows])
    np.testing.assert_allclose(CountStack.contract(arrays, 500, vector), expected, rtol=1e-12)
