"""The learned ``track-record`` selector: what it learns, that it never reads the held-out target, and its fallbacks."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tfp_mlflow.evaluation.learned import distance_for_track_record, track_record_matrices
from tfp_mlflow.reference import Reference, bundled_reference
from tfp_mlflow.selectors._ranks import average_rank, top_rows
from tfp_mlflow.selectors.track_record import Outcomes, TrackRecord


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return Reference.load(bundled_reference(tmp_path_factory.mktemp("reference")))


@pytest.fixture(scope="module")
def shipped(study):
    return distance_for_track_record(study)


def _randomised(outcomes: Outcomes, targets: set[str], seed: int) -> Outcomes:
    """Every outcome whose target is in ``targets``, and its baseline, replaced by random numbers."""
    table = outcomes.table.copy()
    hit = table["t"].isin(targets)
    rng = np.random.default_rng(seed)
    table.loc[hit, "p"] = rng.random(int(hit.sum()))
    table.loc[hit, "baseline"] = rng.random(int(hit.sum()))
    return Outcomes(table=table, groups=outcomes.groups)


def test_canary_randomising_the_held_out_targets_outcomes_leaves_its_column_unchanged(study, shipped):
    outcomes = Outcomes.from_reference(study)
    targets = study.validation[:3]
    before = track_record_matrices(study, shipped, outcomes=outcomes, targets=targets)
    for held_out in targets:
        column = study.shrink_map.get(held_out, held_out)
        after = track_record_matrices(study, shipped, outcomes=_randomised(outcomes, {held_out}, seed=1),
                                      targets=[held_out])
        for scenario, matrix in before.items():
            pd.testing.assert_series_equal(after[scenario][column], matrix[column], check_exact=True)


def test_the_canary_can_fail_other_targets_outcomes_move_the_column(study, shipped):
    outcomes = Outcomes.from_reference(study)
    held_out = study.validation[0]
    column = study.shrink_map.get(held_out, held_out)
    others = set(outcomes.table["t"]) - {held_out}
    before = track_record_matrices(study, shipped, outcomes=outcomes, targets=[held_out])
    after = track_record_matrices(study, shipped, outcomes=_randomised(outcomes, others, seed=2), targets=[held_out])
    moved = [s for s in before if not np.allclose(before[s][column], after[s][column])]
    assert len(moved) >= 3


def test_group_out_hides_the_targets_that_share_its_images(study, shipped):
    outcomes = Outcomes.from_reference(study)
    held_out = next(t for t in study.validation if len(outcomes.group(t)) > 1
                    and len(outcomes.group(t) & set(outcomes.table["t"])) > 1)
    column = study.shrink_map.get(held_out, held_out)
    shaken = _randomised(outcomes, set(outcomes.group(held_out)), seed=3)
    grouped = [track_record_matrices(study, shipped, outcomes=o, targets=[held_out], group_out=True)
               for o in (outcomes, shaken)]
    plain = [track_record_matrices(study, shipped, outcomes=o, targets=[held_out]) for o in (outcomes, shaken)]
    assert all(np.array_equal(grouped[0][s][column], grouped[1][s][column]) for s in grouped[0])
    assert any(not np.array_equal(plain[0][s][column], plain[1][s][column]) for s in plain[0])


def _synthetic(n_targets: int = 12, seed: int = 0) -> Outcomes:
    """``good`` transfers best to every target, ``bad`` worst, five others at random."""
    rng = np.random.default_rng(seed)
    records = []
    for j in range(n_targets):
        target = f"t{j}"
        quality = {"good": 0.9, "bad": 0.3, **{f"s{i}": rng.uniform(0.4, 0.8) for i in range(5)}}
        for source, p in quality.items():
            for metric in ("balanced_accuracy", "auroc"):
                records.append({"scenario": "architecture", "metric": metric, "r": 0, "s": source, "t": target,
                                "p": p, "baseline": 0.6})
    return Outcomes.from_records(records)


def test_a_source_that_transferred_well_elsewhere_ranks_first_whatever_the_distance():
    outcomes = _synthetic()
    sources = ["good", "bad", *[f"s{i}" for i in range(5)], "new"]
    model = TrackRecord(outcomes, sources)
    # Distance puts "bad" closest and "good" farthest: the record still wins.
    affinity = pd.Series(np.linspace(1, 0, len(sources)), index=["bad", *sources[2:], "good"])
    scores = model.scores("architecture", "t0", affinity).sort_values(ascending=False)
    assert scores.index[0] == "good" and scores.index[-1] == "bad"


def test_a_source_without_outcomes_falls_back_to_distance():
    model = TrackRecord(_synthetic(), ["good", "bad", "new1", "new2"])
    affinity = pd.Series({"good": 0.0, "bad": 0.1, "new1": 0.9, "new2": 0.5})
    scores = model.scores("architecture", "t0", affinity)
    assert scores["new1"] > scores["new2"]                     # no record: distance decides between them
    assert model.evidence("architecture", "new1", "t0").strength == "none"


def test_the_rule_is_distance_when_too_few_targets_back_the_record():
    outcomes = _synthetic(n_targets=3)
    model = TrackRecord(outcomes, ["good", "bad", *[f"s{i}" for i in range(5)]])
    affinities = pd.DataFrame(np.random.default_rng(0).random((7, 3)), index=model.sources,
                              columns=["t0", "t1", "t2"])
    rule = model.rule("architecture", "t0", affinities)
    assert not rule.uses_track_record and rule.to_json()["ordered_by"] == "distance"
    many = TrackRecord(_synthetic(n_targets=12), model.sources)
    wide = pd.DataFrame(np.random.default_rng(0).random((7, 12)), index=model.sources,
                        columns=[f"t{j}" for j in range(12)])
    assert many.rule("architecture", "t0", wide).uses_track_record


def test_evidence_counts_other_targets_only():
    model = TrackRecord(_synthetic(n_targets=6), ["good", "bad"])
    good = model.evidence("architecture", "good", "t0")
    assert (good.tried, good.improved, good.outcomes) == (5, 5, 10)
    assert good.median_gain == pytest.approx(0.3)
    bad = model.evidence("architecture", "bad", "t0")
    assert (bad.tried, bad.improved) == (5, 0) and bad.median_gain == pytest.approx(-0.3)
    assert good.record > 0 > bad.record


def _gains(spec: dict[str, tuple[float, float, int]], seed: int = 0) -> Outcomes:
    """Per source ``(mean gain, spread, targets)``: balanced accuracy over a 0.7 baseline on that many targets."""
    rng = np.random.default_rng(seed)
    records = []
    for source, (gain, spread, targets) in spec.items():
        for j in range(targets):
            records.append({"scenario": "architecture", "metric": "balanced_accuracy", "r": 0, "s": source,
                            "t": f"t{j}", "p": 0.7 + gain + spread * rng.standard_normal(), "baseline": 0.7})
    return Outcomes.from_records(records)


def test_strong_is_earned_by_the_effect_against_its_uncertainty_never_by_a_count():
    model = TrackRecord(_gains({"flat": (0.001, 0.02, 60), "tiny": (0.004, 0.001, 60), "big": (0.05, 0.01, 8),
                                "noisy": (0.05, 0.2, 8), "hurts": (-0.03, 0.01, 20), "few": (0.2, 0.0, 2)}))
    verdict = {s: model.evidence("architecture", s, "nowhere")
               for s in ("flat", "tiny", "big", "noisy", "hurts", "few")}
    assert verdict["flat"].strength == "no measurable effect"          # 59 targets, and nothing measurable
    assert verdict["tiny"].strength == "no measurable effect"          # sure, but under a point: no practical gain
    assert verdict["big"].strength == "strong"                         # 8 targets, large against its error
    assert verdict["noisy"].strength == "no measurable effect"         # the same mean, an interval holding 0
    assert verdict["hurts"].strength == "loss" and verdict["few"].strength == "thin"
    low, high = verdict["big"].interval
    assert low < verdict["big"].mean_gain < high and low > 0.03
    assert verdict["big"].to_json()["interval"] == [round(low, 4), round(high, 4)]


def _clusters(per_cluster: int = 12, seed: int = 0) -> tuple[Outcomes, pd.DataFrame]:
    """Two families of targets: ``sa`` helps family a most and b least, ``sb`` the reverse, ``mid`` is middling
    everywhere; the affinities know the families (and nothing of the three sources)."""
    rng = np.random.default_rng(seed)
    targets = [f"{family}{j}" for family in "ab" for j in range(per_cluster)]
    others = [f"o{i}" for i in range(6)]
    records = []
    for target in targets:
        quality = {"sa": 0.95 if target[0] == "a" else 0.35, "sb": 0.95 if target[0] == "b" else 0.35, "mid": 0.65,
                   **{o: rng.uniform(0.55, 0.75) for o in others}}
        records += [{"scenario": "cotraining", "metric": "balanced_accuracy", "r": 0, "s": s, "t": target, "p": p,
                     "baseline": 0.6} for s, p in quality.items()]
    sources = ["sa", "sb", "mid", *others, *targets]
    affinity = pd.DataFrame(rng.random((len(sources), len(targets))) * 0.1, index=sources, columns=targets)
    for target in targets:
        affinity.loc[[t for t in targets if t[0] == target[0]], target] += 1.0
    return Outcomes.from_records(records), affinity


def test_a_neighbourhood_record_makes_the_first_suggestion_depend_on_the_target():
    outcomes, affinity = _clusters()
    model = TrackRecord(outcomes, list(affinity.index))
    firsts = {}
    for target in affinity.columns:
        rule = model.rule("cotraining", target, affinity)
        assert rule.kind == "neighbourhood" and rule.depends_on_target
        scores = model.scores("cotraining", target, affinity[target], rule)
        firsts[target] = scores.drop(list(affinity.columns)).idxmax()
    # Each family gets its own first suggestion (the chosen distance weight may move a target or two).
    for family, best in (("a", "sa"), ("b", "sb")):
        picked = [firsts[t] for t in affinity.columns if t[0] == family]
        assert picked.count(best) >= 0.8 * len(picked)
    near = model.neighbours("cotraining", "a0", affinity["a0"], 5)
    assert len(near) == 5 and all(t[0] == "a" for t in near) and "a0" not in near
    local = model.evidence("cotraining", "sa", "a0", among=near)
    assert local.among == 5 and local.mean_gain == pytest.approx(0.35)
    assert model.evidence("cotraining", "sa", "a0").mean_gain < local.mean_gain


def test_the_neighbourhood_never_reads_the_held_out_targets_outcomes():
    outcomes, affinity = _clusters()
    shaken = _randomised(outcomes, {"a0"}, seed=4)
    before, after = (TrackRecord(o, list(affinity.index)) for o in (outcomes, shaken))
    rules = [m.rule("cotraining", "a0", affinity) for m in (before, after)]
    assert rules[0] == rules[1] and rules[0].kind == "neighbourhood"
    pd.testing.assert_series_equal(before.scores("cotraining", "a0", affinity["a0"], rules[0]),
                                   after.scores("cotraining", "a0", affinity["a0"], rules[1]), check_exact=True)
    moved = _randomised(outcomes, {"a1", "a2"}, seed=4)
    other = TrackRecord(moved, list(affinity.index))
    assert not before.scores("cotraining", "a0", affinity["a0"], rules[0]).equals(
        other.scores("cotraining", "a0", affinity["a0"], rules[0]))


def test_top_rows_is_a_stable_argsort_cut_at_k_on_tie_heavy_columns():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        n, m, k = rng.integers(1, 30), rng.integers(1, 6), rng.integers(1, 5)
        values = rng.integers(0, 4, size=(n, m)).astype(float)
        values[rng.random((n, m)) < 0.3] = -np.inf
        assert np.array_equal(top_rows(values, k), np.argsort(-values, axis=0, kind="stable")[:k])


def test_average_rank_is_pandas_average_rank_on_tie_heavy_values():
    rng = np.random.default_rng(1)
    for _ in range(2000):
        values = rng.integers(0, 5, size=rng.integers(1, 30)).astype(float)
        assert np.array_equal(average_rank(values), pd.Series(values).rank(method="average").to_numpy())


def test_the_track_record_is_registered_as_a_learned_selector_and_fitted_through_the_registry():
    from tfp_mlflow import BadInputError
    from tfp_mlflow.selectors import DISTANCE, LEARNED, fit_selector, get_selector, list_selectors, selector_kind
    from tfp_mlflow.selectors.track_record import TRACK_RECORD

    assert list_selectors(LEARNED) == [TRACK_RECORD] and TRACK_RECORD not in list_selectors(DISTANCE)
    assert selector_kind(TRACK_RECORD) == LEARNED and selector_kind("bkld-small-target") == DISTANCE
    outcomes = _synthetic()
    fitted = fit_selector(TRACK_RECORD, outcomes)
    direct = TrackRecord(outcomes)
    affinity = pd.Series(0.0, index=direct.sources)
    assert isinstance(fitted, TrackRecord) and fitted.sources == direct.sources
    pd.testing.assert_series_equal(fitted.scores("architecture", "t0", affinity),
                                   direct.scores("architecture", "t0", affinity))
    # A query's selector is a distance: naming the learned one says what it is and what to choose instead.
    with pytest.raises(BadInputError, match="learned from measured outcomes, not a distance.*choose one of bkld"):
        get_selector(TRACK_RECORD)
    with pytest.raises(BadInputError, match="not learned from outcomes; the learned ones are track-record"):
        fit_selector("bkld-small-target", outcomes)
