"""One ranking over a mixed cloud: fingerprinted tasks by the fingerprint selector, keyword-only tasks by manual,
merged by a documented rule; every entry names the signal that placed it."""
from __future__ import annotations

import pytest

from tfp_mlflow import BadInputError
from tfp_mlflow.cloud import Cloud
from tfp_mlflow.ranking import MERGE_RULES, merge_rankings
from tfp_mlflow.recommend import recommend
from tfp_mlflow.testing.stores import sqlite_uri

BY_FINGERPRINT = [("f1", 0.1), ("f2", 0.2), ("f3", 5.0)]
BY_KEYWORDS = [("k1", 0.3), ("k2", 0.9)]


def test_each_merge_rule_keeps_each_signals_own_order():
    for rule in MERGE_RULES:
        merged = merge_rankings(BY_FINGERPRINT, BY_KEYWORDS, rule)
        assert sorted(merged) == sorted([(n, "fingerprint") for n, _ in BY_FINGERPRINT] +
                                        [(n, "keywords") for n, _ in BY_KEYWORDS])
        names = [n for n, _ in merged]
        assert [n for n in names if n.startswith("f")] == ["f1", "f2", "f3"]
        assert [n for n in names if n.startswith("k")] == ["k1", "k2"]


def test_the_rules_differ_as_documented():
    names = {rule: [n for n, _ in merge_rankings(BY_FINGERPRINT, BY_KEYWORDS, rule)] for rule in MERGE_RULES}
    assert names["interleave"] == ["f1", "k1", "f2", "k2", "f3"]
    assert names["fingerprint-first"] == ["f1", "f2", "f3", "k1", "k2"]
    assert names["keywords-first"] == ["k1", "k2", "f1", "f2", "f3"]
    assert names["z-score"] == ["k1", "f1", "f2", "k2", "f3"]          # each signal standardised on its own
    with pytest.raises(BadInputError, match="unknown merge rule"):
        merge_rankings(BY_FINGERPRINT, BY_KEYWORDS, "average")


@pytest.mark.slow
def test_a_mixed_cloud_gives_one_ranking_whose_entries_name_their_signal(tmp_path, make_fingerprint, small_spec):
    cloud = Cloud(sqlite_uri(tmp_path / 'cloud' / 'mlflow.db'), cache_dir=tmp_path / "cache")
    for i, shape in enumerate((1.5, 4.0)):
        cloud.contribute(make_fingerprint(f"fp_{i}", seed=i, shape=shape, n=2000), spec=small_spec)
    for name, keywords in [("kw_chest", ["x-ray", "chest"]), ("kw_skin", ["skin"])]:
        cloud.contribute(None, name=name, keywords=keywords, num_images=100, num_classes=2)
    target = make_fingerprint("new", seed=7, shape=1.5, n=2000, keywords=("x-ray", "chest"))
    result = recommend(cloud, target, log=False)                       # the default rule: fingerprints first
    assert [(r.source, r.signal) for r in result.ranking] == [
        ("fp_0", "bkld-small-target"), ("fp_1", "bkld-small-target"), ("kw_chest", "manual"), ("kw_skin", "manual")]
    interleaved = recommend(cloud, target, log=False, merge="interleave")
    assert [r.source for r in interleaved.ranking] == ["fp_0", "kw_chest", "fp_1", "kw_skin"]
    assert [r.rank for r in result.ranking] == [1, 2, 3, 4]
    assert any("ranked by manual and merged" in note for note in result.notes)
    fingerprints_only = recommend(cloud, target, log=False, merge=None)
    assert [r.source for r in fingerprints_only.ranking] == ["fp_0", "fp_1"]
    assert any("give the new task's --keywords" in note for note in
               recommend(cloud, make_fingerprint("new", seed=7, shape=1.5, n=2000, keywords=()), log=False).notes)
