"""The published 71-task study: policies under albumentations 2.x, the Fig. 4 reproduction, import and evaluate."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from tfp_mlflow import BadInputError
from tfp_mlflow.cli import main
from tfp_mlflow.evaluation import evaluate
from tfp_mlflow.evaluation.meta_metrics import top_k_score, weighted_tau
from tfp_mlflow.policies import load_policy, translate_policy
from tfp_mlflow.reference import Reference, bundled_reference, read_distance_matrix
from tfp_mlflow.testing.stores import sqlite_uri

# Fig. 4 (top) of the paper, as the reference README states them: k = 1 and k = 5.
FIG4 = {"architecture": (67.44, 89.92), "pretraining": (41.09, 75.19), "augmentation": (58.14, 82.95),
        "cotraining": (57.36, 84.50)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return bundled_reference(tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="module")
def study(reference):
    return Reference.load(reference)


@pytest.fixture(scope="module")
def bkld_evaluation(study):
    matrix = read_distance_matrix(study.distance_files()["bkld-small-target"])
    return evaluate(study, {"bkld-small-target": matrix, "manual": study.manual_matrix()}, bootstraps=100)


@pytest.mark.slow   # 37 s: every one of the study's policies, applied to an image
@pytest.mark.torch
def test_every_published_policy_loads_and_runs_under_albumentations_2(study):
    files = study.policy_files()
    assert len(files) == 213
    image = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    for path in files.values():
        policy = json.loads(path.read_text())
        transform = load_policy(policy, image_side=224)
        for _ in range(3):
            out = transform(image=image)["image"]
            assert out.shape == image.shape and out.dtype == np.uint8
        assert json.loads(path.read_text()) == policy          # the original is untouched


def test_policy_translation_keeps_the_1_3_meaning():
    old = {"__version__": "1.3.0", "transform": {"__class_fullname__": "Compose", "p": 1.0, "transforms": [
        {"__class_fullname__": "RGBShift", "always_apply": True, "p": 0.2, "r_shift_limit": [-25, -25],
         "g_shift_limit": 1, "b_shift_limit": [0, 0]},
        {"__class_fullname__": "Solarize", "always_apply": False, "p": 0.5, "threshold": [128, 128]},
        {"__class_fullname__": "CoarseDropout", "p": 0.5, "max_holes": 8, "min_holes": 2, "max_height": 300,
         "min_height": 4, "max_width": 16, "min_width": 16, "fill_value": 0, "mask_fill_value": None},
        {"__class_fullname__": "ShiftScaleRotate", "p": 0.5, "value": None, "mask_value": None}]}}
    rgb, solarize, dropout, shift = translate_policy(old, image_side=224)["transform"]["transforms"]
    assert rgb["p"] == 1.0 and "always_apply" not in rgb
    assert rgb["r_shift_limit"] == [-25 / 255, -25 / 255] and rgb["g_shift_limit"] == [-1 / 255, 1 / 255]
    assert solarize["threshold_range"] == [128 / 255, 128 / 255] and "threshold" not in solarize
    assert dropout["num_holes_range"] == [2, 8] and dropout["hole_height_range"] == [4, 224]
    assert dropout["fill"] == 0 and "fill_mask" not in dropout
    assert shift["fill"] == 0 and shift["fill_mask"] == 0
    with pytest.raises(BadInputError, match="not an albumentations transform"):
        load_policy({"transform": {"__class_fullname__": "Lambda"}})


def test_fig4_gain_curve_of_bkld_small_target_is_reproduced_exactly(bkld_evaluation):
    curves = bkld_evaluation.gain_curve()["bkld-small-target"]
    for scenario, (first, fifth) in FIG4.items():
        assert round(curves[scenario][0], 2) == pytest.approx(first, abs=0.005), scenario
        assert round(curves[scenario][4], 2) == pytest.approx(fifth, abs=0.005), scenario
        assert all(np.diff(curves[scenario]) >= 0)              # more shots never lose a gain


def test_fig4_bottom_relative_improvement_over_manual_is_reproduced(bkld_evaluation, reference):
    """The paper: bKLD(small,target)'s AUROC improvement is 12 / 57 / 15 / 2 % larger than manual matching's."""
    published = json.loads((reference / "published.json").read_text())[
        "fig4_bottom_relative_improvement_vs_manual_percent"]
    names = {"M.A.": "architecture", "P.D.": "pretraining", "A.P.": "augmentation", "C.D.": "cotraining"}
    ours = bkld_evaluation.relative_improvement("manual", "auroc")["bkld-small-target"]
    assert {names[k]: round(ours[names[k]]) for k in names} == {names[k]: v for k, v in published.items()
                                                                if k in names}
    curves = bkld_evaluation.delta_curve("auroc")
    for selector in ("bkld-small-target", "manual"):
        assert all(np.all(np.diff(c) >= 0) for c in curves[selector].values())   # the best of more shots
    means = {s: np.mean(curves[s]["pretraining"]) for s in curves}
    assert ours["pretraining"] == pytest.approx(100 * (means["bkld-small-target"] / means["manual"] - 1))


def test_win_rates_and_meta_metrics_are_consistent(bkld_evaluation):
    payload = bkld_evaluation.to_json()
    assert payload["win_rate_setups_per_scenario"] == 43 * 3 * 4 * 2
    for scenario in FIG4:
        shares = [payload["win_rates"][s][scenario] for s in ("bkld-small-target", "manual")]
        assert sum(shares) >= 100.0 - 1e-9                      # every setup has a winner; ties count twice
    means = payload["meta_metrics"]["bkld-small-target"]["architecture"]
    assert 0.0 <= means["percentile"] <= 1.0 and -1.0 <= means["weightedtau"] <= 1.0
    fractions = payload["bootstrap_rank_fractions"]["pretraining"]
    assert all(abs(sum(v) - 1.0) < 1e-9 for v in fractions.values())


def test_manual_selector_applies_the_studys_tie_breakers(study):
    matrix = study.manual_matrix()
    # Two sources with the same keywords as a target differ only by the size (and dimension, position) shift.
    sizes = pd.Series({t: task.num_images for t, task in study.tasks.items()})
    column = matrix["chexpert_edema"]
    chexpert = [t for t in study.tasks if t.startswith("chexpert_") and t != "chexpert_edema"]
    closest = column[chexpert].sort_values()
    assert sizes[closest.index[0]] >= sizes[closest.index[-1]]
    assert 0 < column[chexpert].max() - column[chexpert].min() < 0.08


def test_meta_metrics_follow_their_definitions():
    outcomes = pd.Series({"a": 0.9, "b": 0.7, "c": 0.5, "d": np.nan})
    assert top_k_score("gain", ["b", "c"], outcomes, 0.6, "avg") == 0.5
    assert top_k_score("gain", ["b", "c"], outcomes, 0.6, "best") == 1.0
    assert top_k_score("improvement", ["a", "c"], outcomes, 0.6, "avg") == pytest.approx(0.1)
    assert top_k_score("percentile", ["a"], outcomes, 0.6) == 1.0
    assert top_k_score("regret", ["a"], outcomes, 0.6) == 1.0
    assert top_k_score("regret", ["c"], outcomes, 0.6) == pytest.approx(1 - 0.4 / 0.5)
    assert np.isnan(top_k_score("improvement", ["d"], outcomes, 0.6))
    assert top_k_score("gain", ["d"], outcomes, 0.6) == 0.0
    affinity = pd.Series({"a": 3.0, "b": 2.0, "c": 1.0, "d": 0.0})
    assert weighted_tau(affinity, outcomes) == pytest.approx(1.0)


def test_kendall_tau_b_equals_scipys_with_ties_and_missing_values():
    import warnings

    import scipy.stats

    from tfp_mlflow.evaluation.protocol import kendall_tau_b

    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 7))
        a, b = rng.integers(0, 4, n).astype(float), rng.integers(0, 4, n).astype(float)
        a[rng.random(n) < 0.15] = np.nan
        b[rng.random(n) < 0.15] = np.nan
        with warnings.catch_warnings():   # scipy warns on constant input
            warnings.simplefilter("ignore")
            expected = scipy.stats.kendalltau(a, b, nan_policy="omit")[0]
        assert np.isclose(kendall_tau_b(a, b), expected, rtol=1e-12, atol=0, equal_nan=True), (a, b)


def test_bad_reference_and_matrices_are_clear_errors(tmp_path, study):
    with pytest.raises(BadInputError, match="is not a reference folder"):
        Reference.load(tmp_path)
    with pytest.raises(BadInputError, match="lacks target column"):
        evaluate(study, {"broken": pd.DataFrame({"x": [1.0]}, index=list(study.tasks)[:1])})
    (tmp_path / "bad.csv").write_text(",a\nb,not-a-number\n")
    with pytest.raises(BadInputError, match="non-numeric"):
        read_distance_matrix(tmp_path / "bad.csv")
    # A fingerprint selector has nothing to read on the reference's tasks: one line naming what does.
    result = CliRunner().invoke(main, ["evaluate", "--builtin", "bkld-small-target"])
    assert result.exit_code == 2 and "needs fingerprints" in result.output and "manual, track-record, hybrid" in \
        result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_import_reference_is_idempotent_and_ranks_by_keywords(reference, tmp_path):
    uri = sqlite_uri(tmp_path / 'cloud' / 'mlflow.db')
    runner = CliRunner()
    first = runner.invoke(main, ["import-reference", str(reference), "--tracking-uri", uri])
    assert first.exit_code == 0, first.output
    assert "71 written" in first.output
    again = runner.invoke(main, ["import-reference", str(reference), "--tracking-uri", uri])
    assert again.exit_code == 0 and "0 written, 71 unchanged" in again.output
    from tfp_mlflow.cloud import Cloud, KnowledgeKind

    cloud = Cloud(uri, cache_dir=tmp_path / "cache")
    assert len(cloud.tasks()) == 71
    kinds = {k.kind for k in cloud.knowledge("chexpert_edema")}
    assert {KnowledgeKind.PRETRAINING, KnowledgeKind.COTRAINING, KnowledgeKind.AUGMENTATION,
            KnowledgeKind.ARCHITECTURE_TRANSFER, KnowledgeKind.BASELINE, KnowledgeKind.POLICY} <= kinds
    assert KnowledgeKind.ARCHITECTURE not in kinds             # no timm name is invented
    result = runner.invoke(main, ["recommend", "--selector", "manual", "--keywords", "x-ray,chest,medical",
                                  "--tracking-uri", uri, "--no-log", "--json"])
    payload = json.loads(result.stdout)
    assert payload["ranking"][0]["source"].startswith("chexpert_")
    assert any("timm name" in n for n in payload["scenarios"]["architecture"]["notes"])
    assert len(payload["scenarios"]["augmentation"]["items"]) == 3


@pytest.mark.slow   # end to end through the CLI: the formulas above stay on the quick path
def test_evaluate_cli_writes_json_and_plots(reference, tmp_path):
    csv = reference / "distances" / "bkld-small-target.csv"
    result = CliRunner().invoke(main, ["evaluate", "--reference", str(reference), "--selector",
                                       f"bkld-small-target={csv}", "--builtin", "manual", "--bootstraps", "50",
                                       "--json", "--plots", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload["win_rates"]) == {"bkld-small-target", "manual"}
    assert set(payload["win_rates"]["manual"]) == {"architecture", "pretraining", "augmentation", "cotraining",
                                                   "mean"}
    assert round(payload["gain_curve"]["bkld-small-target"]["pretraining"][0], 2) == 41.09
    assert (tmp_path / "plots" / "gain_curves.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "auroc_improvement.png").stat().st_size > 1000
    assert round(payload["relative_improvement_over_manual"]["bkld-small-target"]["pretraining"]) == 57
    assert (tmp_path / "plots" / "bootstrap_ranks.png").is_file()
    bad = CliRunner().invoke(main, ["evaluate", "--reference", str(reference), "--selector", "oops"])
    assert bad.exit_code == 2 and "NAME=PATH.csv" in bad.output


@pytest.mark.slow   # end to end through the CLI: the formulas above stay on the quick path
def test_evaluate_compares_the_shipped_distances_with_manual_by_default(reference):
    shipped = reference / "distances" / "bkld-small-target.csv"
    explicit = CliRunner().invoke(main, ["evaluate", "--reference", str(reference), "--bootstraps", "10", "--json",
                                         "--selector", f"bkld-small-target={shipped}", "--builtin", "manual"])
    default = CliRunner().invoke(main, ["evaluate", "--reference", str(reference), "--bootstraps", "10", "--json"])
    assert default.exit_code == 0, default.output
    assert json.loads(default.stdout)["win_rates"] == json.loads(explicit.stdout)["win_rates"]
    alone = CliRunner().invoke(main, ["evaluate", "--reference", str(reference), "--bootstraps", "10", "--builtin",
                                      "manual", "--json"])
    assert alone.exit_code == 0 and "with manual alone every win rate is 100 %" in alone.stderr
    assert set(json.loads(alone.stdout)["win_rates"]["manual"].values()) == {100.0}


@pytest.mark.slow
def test_hybrid_with_every_source_fingerprinted_is_bkld_and_with_few_moves_towards_manual(reference):
    shipped = reference / "distances" / "bkld-small-target.csv"
    run = lambda share: json.loads(CliRunner().invoke(main, [  # noqa: E731
        "evaluate", "--reference", str(reference), "--bootstraps", "0", "--json", "--selector",
        f"bkld-small-target={shipped}", "--builtin", "manual", "--builtin", "hybrid", "--fingerprinted", share]).stdout)
    everything = run("1")
    assert everything["gain_curve"]["hybrid"] == everything["gain_curve"]["bkld-small-target"]
    few = run("0.1")
    assert few["gain_curve"]["hybrid"] != few["gain_curve"]["bkld-small-target"]
    assert set(few["win_rates"]) == {"bkld-small-target", "manual", "hybrid"}


@pytest.mark.slow
def test_track_record_beats_the_shipped_distances_leave_one_target_out(reference, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "--reference", str(reference), "--builtin", "track-record",
                                       "--builtin", "manual", "--selector",
                                       f"bkld-small-target={reference / 'distances' / 'bkld-small-target.csv'}",
                                       "--bootstraps", "0", "--matrix-out", str(tmp_path), "--json", "-"])
    assert result.exit_code == 0, result.output
    rates = json.loads(result.stdout)["win_rates"]
    scenarios = ["architecture", "pretraining", "augmentation", "cotraining"]
    assert sum(rates["track-record"][s] > rates["bkld-small-target"][s] for s in scenarios) >= 3
    assert rates["track-record"]["mean"] >= 38.0
    written = read_distance_matrix(tmp_path / "track-record-pretraining.csv")
    assert (written.to_numpy() >= 1.0).all() and len(written) == 71


def _unpack(cache: str) -> tuple[str, int, int]:
    folder = bundled_reference(cache)
    return str(folder), len(list(folder.rglob("*"))), folder.stat().st_ino


@pytest.mark.slow   # three processes unpacking the archive at once
def test_the_reference_unpacks_once_when_processes_start_together_and_replaces_an_interrupted_copy(tmp_path):
    """Three processes on a fresh cache (CI's test workers, a study's workers) all get the one complete copy, and
    nobody replaces it under another's reader; a copy left without its marker by an interrupted unpack is
    replaced."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(3) as pool:
        answers = pool.map(_unpack, [str(tmp_path / "fresh")] * 3)
    folder = tmp_path / "fresh" / "tfp-paper"
    assert {a[0] for a in answers} == {str(folder)} and len({a[1] for a in answers}) == 1
    assert {a[2] for a in answers} == {folder.stat().st_ino}          # the copy each got is the one still there
    assert (folder / ".complete").is_file() and Reference.load(folder).validation
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir()) == ["tfp-paper"]   # no staging left behind
    broken = tmp_path / "broken" / "tfp-paper"
    broken.mkdir(parents=True)
    (broken / "half.csv").write_text("a,b\n")
    assert _unpack(str(tmp_path / "broken"))[1] == answers[0][1]
    assert not (broken / "half.csv").exists() and (broken / ".complete").is_file()
    assert sorted(p.name for p in (tmp_path / "broken").iterdir()) == ["tfp-paper"]
