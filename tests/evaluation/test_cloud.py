"""`tfp evaluate --cloud`: leave-one-out scoring of selectors on a user's own cloud (real SQLite MLflow store)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tfp_mlflow import BadInputError
from tfp_mlflow.cli import main
from tfp_mlflow.cloud import Cloud, Knowledge, KnowledgeKind, KnowledgeRow
from tfp_mlflow.evaluation.cloud import evaluate_cloud, outcomes_from_cloud
from tfp_mlflow.testing.stores import sqlite_uri

# Gamma shapes: "near" tasks look like their target; the outcomes reward the near source. Keywords and sizes make
# the manual selector prefer the far, larger source instead.
TASKS = {"t_1": (1.5, 100), "near_1": (1.55, 100), "far_1": (4.0, 900),
         "t_2": (3.0, 100), "near_2": (3.05, 100), "far_2": (0.8, 900)}


@pytest.fixture
def cloud(tmp_path, make_fingerprint, small_spec):
    cloud = Cloud(sqlite_uri(tmp_path / 'cloud' / 'mlflow.db'), cache_dir=tmp_path / "cache")
    for i, (name, (shape, size)) in enumerate(TASKS.items()):
        knowledge = []
        if name.startswith("t_"):
            suffix = name[-1]
            knowledge = [
                Knowledge(name, KnowledgeKind.BASELINE, (KnowledgeRow(architecture="a", balanced_accuracy=0.70),)),
                Knowledge(name, KnowledgeKind.COTRAINING, (
                    KnowledgeRow(source=f"near_{suffix}", balanced_accuracy=0.85, repetition=0),
                    KnowledgeRow(source=f"far_{suffix}", balanced_accuracy=0.60, repetition=0)))]
        cloud.contribute(make_fingerprint(name, seed=i, shape=shape, n=3000, keywords=("x-ray",), num_images=size),
                         knowledge=knowledge, spec=small_spec)
    return cloud


def test_targets_are_the_tasks_with_a_baseline_and_two_measured_sources(cloud):
    study = outcomes_from_cloud(cloud)
    assert study.validation == ["t_1", "t_2"] and study.repetitions == [0]
    table = study.outcome_table("cotraining", "balanced_accuracy", 0)
    assert table.loc["near_1", "t_1"] == 0.85 and table.loc["far_2", "t_2"] == 0.60
    assert study.baseline("t_2", "balanced_accuracy", 0) == 0.70


def test_leave_one_out_scores_the_selector_that_ranks_the_helpful_source_first(cloud):
    result = evaluate_cloud(cloud, ["manual", "bkld-small-target"], top_k_shots=1, bootstraps=50)
    curves = result.gain_curve()
    assert curves["bkld-small-target"]["cotraining"][0] == 100.0     # near source first: both targets improve
    assert curves["manual"]["cotraining"][0] == 0.0                  # larger, far source first: neither does
    rates = result.win_rates()
    assert rates["bkld-small-target"]["cotraining"] == 100.0 and rates["manual"]["cotraining"] < 100.0
    assert "pretraining" not in rates["manual"]                       # nothing measured there: no score
    assert set(result.scores["target"]) == {"t_1", "t_2"}


def test_cli_evaluates_the_cloud_and_logs_the_run(cloud, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "--cloud", "--tracking-uri", cloud.uri, "--top-k", "1",
                                       "--bootstraps", "20", "--json", "-"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["targets"] == ["t_1", "t_2"] and payload["selectors"] == ["manual", "bkld-small-target"]
    assert cloud.client.get_run(payload["run_id"]).info.status == "FINISHED"


def test_a_cloud_without_measured_transfers_is_a_clear_error(tmp_path, make_fingerprint, small_spec):
    empty = Cloud(sqlite_uri(tmp_path / 'empty' / 'mlflow.db'), cache_dir=tmp_path / "cache")
    empty.contribute(make_fingerprint("only"), spec=small_spec)
    with pytest.raises(BadInputError, match="no task of the cloud .* has a baseline and transfer outcomes"):
        evaluate_cloud(empty, ["manual"])
    result = CliRunner().invoke(main, ["evaluate", "--cloud", "--builtin", "vdna", "--selector", "x=y.csv",
                                       "--tracking-uri", empty.uri])
    assert result.exit_code == 2 and "drop --selector" in result.output


def test_track_record_on_a_cloud_with_little_evidence_is_its_distance_and_writes_its_matrices(cloud, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "--cloud", "--tracking-uri", cloud.uri, "--top-k", "1",
                                       "--bootstraps", "0", "--builtin", "track-record", "--builtin",
                                       "bkld-small-target", "--matrix-out", str(tmp_path / "m"), "--json", "-"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    # Two targets: too few for a learned rule, so it ranks by the cloud's fingerprint distance and wins as it does.
    assert payload["gain_curve"]["track-record"]["cotraining"] == payload["gain_curve"]["bkld-small-target"][
        "cotraining"]
    written = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert written == [f"track-record-{s}.csv" for s in sorted(["architecture", "augmentation", "cotraining",
                                                                 "pretraining"])]


def test_another_accounts_outcomes_about_a_task_score_no_selector_on_it(cloud):
    """Evaluation reads outcomes by the rules a recommendation does: a table about t_1 written by an account its
    owner never named (here: rewarding the far source) changes neither the targets nor any score."""
    before = evaluate_cloud(cloud, ["manual", "bkld-small-target"], top_k_shots=1, bootstraps=50)
    for target in ("t_1", "t_2"):
        cloud.add_knowledge(Knowledge(target, KnowledgeKind.COTRAINING, (
            KnowledgeRow(source=f"far_{target[-1]}", balanced_accuracy=0.99, repetition=0),
            KnowledgeRow(source=f"near_{target[-1]}", balanced_accuracy=0.10, repetition=0))), contributor="mallory")
    cloud.add_knowledge(Knowledge("near_1", KnowledgeKind.BASELINE, (KnowledgeRow(balanced_accuracy=0.5),)),
                        contributor="mallory")
    after = evaluate_cloud(cloud, ["manual", "bkld-small-target"], top_k_shots=1, bootstraps=50)
    assert outcomes_from_cloud(cloud).validation == ["t_1", "t_2"]
    assert after.win_rates() == before.win_rates() and after.gain_curve() == before.gain_curve()
    table = outcomes_from_cloud(cloud).outcome_table("cotraining", "balanced_accuracy", 0)
    assert table.loc["far_1", "t_1"] == 0.60
    # --trusted reads only the named accounts' tables (never another account's about a task it does not own).
    owner = cloud.task("t_1").contributor
    trusting = evaluate_cloud(cloud, ["manual", "bkld-small-target"], top_k_shots=1, bootstraps=50,
                              trusted=f"{owner},mallory")
    assert trusting.win_rates() == before.win_rates()
    with pytest.raises(BadInputError, match="no task of the cloud"):
        evaluate_cloud(cloud, ["manual"], trusted="mallory")
    result = CliRunner().invoke(main, ["evaluate", "--trusted", "mallory"])
    assert result.exit_code == 2 and "add --cloud" in result.output
