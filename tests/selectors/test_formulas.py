"""Every selector equals its plain per-pair formula (docs/method.md §3-§4) to 1e-9 relative, in one vectorised call."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.stats

from tfp_mlflow import BadInputError, SpecMismatchError, Task, get_selector, list_selectors
from tfp_mlflow.selectors import PreparedSources


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def kl(p, q):
    return sum(pj * np.log(pj / qj) for pj, qj in zip(p, q) if pj > 0)


def plain_bkld(target, source, variant, weighting):
    p = target.fingerprint.counts[variant] / target.fingerprint.num_draws
    q = source.fingerprint.counts[variant] / source.fingerprint.num_draws
    if weighting == "target-softmax":
        w = softmax(target.fingerprint.feature_sum / target.fingerprint.num_draws)
    elif weighting == "source-l1":
        mu = source.fingerprint.feature_sum / source.fingerprint.num_draws
        w = mu / mu.sum()
    else:
        w = np.ones(p.shape[0])
    total = 0.0
    for i in range(p.shape[0]):
        total += w[i] * kl(p[i], softmax(q[i]))
    return total / w.sum()


def plain_p2l(target, source):
    a = target.fingerprint.means / target.fingerprint.means.sum()
    b = source.fingerprint.means / source.fingerprint.means.sum()
    return kl(a, b)


def plain_vdna(target, source):
    p = target.fingerprint.counts["large"] / target.fingerprint.num_draws
    q = source.fingerprint.counts["large"] / source.fingerprint.num_draws
    return np.mean([np.abs(np.cumsum(p[i] - q[i])).sum() for i in range(p.shape[0])])


def plain_fid(target, source):
    def stats(fp):
        n, mu = fp.num_draws, fp.feature_sum / fp.num_draws
        return mu, (fp.second_moments - n * np.outer(mu, mu)) / (n - 1)
    mu1, s1 = stats(source.fingerprint)
    mu2, s2 = stats(target.fingerprint)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(root)


def plain_manual(target, source, sources):
    a, b = set(target.keywords), set(source.keywords)
    iou_distance = 1 - len(a & b) / len(a | b) if a | b else 1.0
    # The study's tie-breakers: average rank of size and dimension among the sources, then list position.
    position = [s.name for s in sources].index(source.name)
    size_rank = scipy.stats.rankdata([s.num_images for s in sources])[position]
    dims = [s.intrinsic_dim for s in sources]
    dim_rank = scipy.stats.rankdata([d for d in dims if d is not None])[
        [s.name for s in sources if s.intrinsic_dim is not None].index(source.name)] \
        if source.intrinsic_dim is not None else 0.0
    return iou_distance - 1e-3 * size_rank - 1e-5 * dim_rank - 1e-7 * position


PLAIN = {
    "bkld-small-target": lambda t, s: plain_bkld(t, s, "small", "target-softmax"),
    "bkld-large-source": lambda t, s: plain_bkld(t, s, "large", "source-l1"),
    "bkld-large-unweighted": lambda t, s: plain_bkld(t, s, "large", "uniform"),
    "p2l": plain_p2l,
    "vdna": plain_vdna,
    "manual": plain_manual,
}
NEEDS_SOURCES = {"manual"}


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_vectorised_matrix_equals_plain_per_pair_formula(name, tasks):
    matrix = get_selector(name).matrix(tasks, tasks)
    expected = np.array([[PLAIN[name](t, s, *([tasks] if name in NEEDS_SOURCES else [])) for t in tasks]
                         for s in tasks])
    np.testing.assert_allclose(matrix, expected, rtol=1e-9, atol=1e-12)


def test_fid_equals_scipy_sqrtm_formula(tasks):
    matrix = get_selector("fid").matrix(tasks, tasks)
    expected = np.array([[plain_fid(t, s) for t in tasks] for s in tasks])
    # scipy's sqrtm is itself only accurate to ~1e-10 on these matrices
    np.testing.assert_allclose(matrix, expected, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(np.diag(matrix), 0, atol=1e-8)


def test_bkld_is_asymmetric_and_source_softmax_removes_empty_bins(tasks):
    matrix = get_selector("bkld-small-target").matrix(tasks, tasks)
    assert np.isfinite(matrix).all()
    assert not np.allclose(matrix, matrix.T)


def test_p2l_size_prefers_larger_sources_among_equally_similar(make_fingerprint):
    target = Task.from_fingerprint(make_fingerprint("target", seed=0))
    fp = make_fingerprint("base", seed=1)
    sources = [Task(name=f"s{i}", num_images=n, fingerprint=fp) for i, n in enumerate([10, 100, 1000, 10000])]
    distances = get_selector("p2l-size").distances(target, sources)
    assert list(np.argsort(distances)) == [3, 2, 1, 0]
    plain = get_selector("p2l").distances(target, sources)
    assert np.allclose(plain, plain[0])


def test_p2l_size_matches_its_formula(tasks):
    target, sources = tasks[0], tasks[1:]
    d = np.array([plain_p2l(target, s) for s in sources])
    sizes = np.array([s.num_images for s in sources], dtype=float)
    affinity = 1.5 * -scipy.stats.zscore(d) + scipy.stats.zscore(scipy.stats.boxcox(sizes)[0])
    np.testing.assert_allclose(get_selector("p2l-size").distances(target, sources), -affinity, rtol=1e-9)


def test_fid_without_second_moments_is_a_clear_error(make_fingerprint):
    tasks = [Task.from_fingerprint(make_fingerprint(f"t{i}", seed=i)) for i in range(2)]
    with pytest.raises(BadInputError, match="no second moments.*--moments"):
        get_selector("fid").matrix(tasks, tasks)


def test_comparing_fingerprints_of_different_specs_raises(make_fingerprint, small_spec):
    from tfp_mlflow import FingerprintSpec
    other = FingerprintSpec(backbone="other", weights_sha256="", lo=small_spec.lo, hi=small_spec.hi + 1)
    a = Task.from_fingerprint(make_fingerprint("a", seed=1))
    b = Task.from_fingerprint(make_fingerprint("b", seed=2, spec=other))
    for name in ("bkld-small-target", "p2l", "vdna"):
        with pytest.raises(SpecMismatchError, match="different specs"):
            get_selector(name).distances(a, [a, b])
        with pytest.raises(SpecMismatchError, match="different specs"):
            get_selector(name).distances(b, [a])


def test_task_without_fingerprint_needs_the_manual_selector(make_fingerprint):
    described = Task(name="reference_task", keywords=("x-ray", "chest"), num_images=500)
    target = Task.from_fingerprint(make_fingerprint("mine", keywords=("x-ray",)))
    with pytest.raises(BadInputError, match="has no fingerprint.*manual"):
        get_selector("bkld-small-target").distances(target, [described])
    assert get_selector("manual").distances(target, [described]) == pytest.approx([0.5], abs=0.01)


def test_unknown_selector_lists_the_known_ones():
    with pytest.raises(BadInputError, match="unknown selector 'nope'; choose one of bkld-small-target"):
        get_selector("nope")
    assert {"bkld-small-target", "bkld-large-source", "bkld-large-unweighted", "manual", "p2l", "p2l-size",
            "vdna", "fid"} <= set(list_selectors())


def test_prepared_sources_are_reused_and_bound_to_their_selector(tasks):
    selector = get_selector("bkld-large-unweighted")
    prepared = selector.prepare(tasks)
    stack = prepared.arrays.get("stack_counts", prepared.arrays.get("stack_indptr"))
    assert len(stack) in (len(tasks), len(tasks) + 1) and tuple(prepared.arrays["shape"]) == (12, 1000)
    np.testing.assert_array_equal(selector.distances(tasks[0], prepared), selector.distances(tasks[0], tasks))
    with pytest.raises(BadInputError, match="prepared for selector"):
        get_selector("vdna").distances(tasks[0], prepared)


def test_lazy_sources_are_walked_once(tasks):
    class Lazy:
        def __init__(self):
            self.reads = 0
        def __len__(self):
            return len(tasks)
        def __getitem__(self, i):
            if i >= len(tasks):
                raise IndexError(i)
            self.reads += 1
            return tasks[i]
    lazy = Lazy()
    prepared = get_selector("bkld-small-target").prepare(lazy)
    assert lazy.reads == len(tasks) and prepared.names == [t.name for t in tasks]


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_saved_prepared_sources_give_the_same_distances(name, tasks, tmp_path):
    selector = get_selector(name)
    prepared = selector.prepare(tasks)
    loaded = PreparedSources.load(prepared.save(tmp_path / "prepared"))
    assert loaded.names == prepared.names and loaded.spec_id == prepared.spec_id
    np.testing.assert_array_equal(selector.matrix(loaded, tasks), selector.matrix(prepared, tasks))
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_unreadable_prepared_sources_are_a_clear_error(tasks, tmp_path):
    folder = get_selector("vdna").prepare(tasks).save(tmp_path / "prepared")
    (folder / "meta.json").write_text("{")
    with pytest.raises(BadInputError, match="cannot be read.*delete the folder"):
        PreparedSources.load(folder)
