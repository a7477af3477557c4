"""Ranking: ascending distance, then the documented tie rule (larger source, larger dimension, name)."""
from __future__ import annotations

import numpy as np
import pytest

from tfp_mlflow import BadInputError, Task, rank_order, rank_sources


def test_ties_prefer_larger_sources_then_dimension_then_name():
    distances = np.array([0.5, 0.2, 0.5, 0.5, 0.5, np.nan, 0.5])
    names = ["e", "a", "d", "c", "b", "z", "f"]
    sizes = np.array([10, 1, 30, 30, 30, 999, 30])
    dims = np.array([1, 1, 5, np.nan, 5, 1, 7])
    order = rank_order(distances, names, sizes, dims)
    assert [names[i] for i in order] == ["a", "f", "b", "d", "c", "e", "z"]


def test_rank_sources_excludes_the_target_and_cuts_at_top_k():
    target = Task(name="t", keywords=("chest", "x-ray", "lung"), num_images=5)
    sources = [target,
               Task(name="small_same", keywords=("chest", "x-ray", "lung"), num_images=10),
               Task(name="big_same", keywords=("chest", "x-ray", "lung"), num_images=1000),
               Task(name="half", keywords=("chest", "mri"), num_images=10**6),
               Task(name="other", keywords=("skin",), num_images=10**7)]
    ranking = rank_sources("manual", target, sources, top_k=3)
    assert [(r.rank, r.name) for r in ranking] == [(1, "big_same"), (2, "small_same"), (3, "half")]
    # Keyword distances 0 and 0.75, less the study's small size tie-break shifts.
    assert ranking[0].distance == pytest.approx(0.0, abs=0.01) and ranking[2].distance == pytest.approx(0.75, abs=0.01)
    with pytest.raises(BadInputError, match="top-k"):
        rank_sources("manual", target, sources, top_k=0)


def test_ranking_puts_the_generating_family_first(small_spec):
    """Fingerprints of draws from the same distribution rank each other first under every fingerprint selector."""
    from tfp_mlflow import FingerprintBuilder

    tasks = []
    patterns = np.random.default_rng(0).uniform(0.4, 1.6, size=(3, small_spec.num_features))
    for family, pattern in enumerate(patterns):
        for member in range(3):
            rng = np.random.default_rng(100 * family + member)
            builder = FingerprintBuilder(small_spec)
            builder.update(rng.gamma(2.0, pattern, size=(2000, small_spec.num_features)))
            tasks.append(Task.from_fingerprint(builder.build(name=f"f{family}_{member}", num_images=50)))
    for selector in ("bkld-small-target", "bkld-large-unweighted", "p2l", "vdna"):
        for target in tasks:
            best = rank_sources(selector, target, tasks, top_k=1)[0]
            assert best.name.split("_")[0] == target.name.split("_")[0], (selector, target.name, best.name)
