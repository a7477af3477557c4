"""Day one: `tfp recommend` checks that the cloud can answer before drawing a single image, falls back to the
keywords when only keyword tasks could answer, holds the reference in the embedded default cloud from the first
query, and ends with the commands that act on its answer."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tfp_mlflow.cli import main
from tfp_mlflow.cloud import Cloud
from tfp_mlflow.testing.stores import sqlite_uri

pytestmark = pytest.mark.slow


@pytest.fixture
def unreadable_dataset(tmp_path):
    """A dataset whose images cannot be decoded: any attempt to fingerprint it fails, naming a file."""
    for label in ("a", "b"):
        folder = tmp_path / "new_task" / label
        folder.mkdir(parents=True)
        for i in range(3):
            (folder / f"{i}.png").write_bytes(b"not a png")
    return tmp_path / "new_task"


def test_an_empty_cloud_fails_in_one_line_before_any_image_is_read(unreadable_dataset, tmp_path):
    uri = sqlite_uri(tmp_path / 'cloud' / 'mlflow.db')
    result = CliRunner().invoke(main, ["recommend", str(unreadable_dataset), "--tracking-uri", uri])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "holds no task yet" in result.output
    assert "tfp import-reference" in result.output and "png" not in result.output   # no image was opened


def test_keyword_only_tasks_are_ranked_by_keywords_without_extraction(unreadable_dataset, tmp_path):
    cloud = Cloud(sqlite_uri(tmp_path / 'cloud' / 'mlflow.db'), cache_dir=tmp_path / "cache")
    for name, keywords in [("chest_a", ["x-ray", "chest"]), ("skin_a", ["skin", "dermoscopy"])]:
        cloud.contribute(None, name=name, keywords=keywords, num_images=100, num_classes=2)
    without = CliRunner().invoke(main, ["recommend", str(unreadable_dataset), "--tracking-uri", cloud.uri])
    assert without.exit_code == 2 and "has a fingerprint" in without.output and "--keywords" in without.output
    with_keywords = CliRunner().invoke(main, ["recommend", str(unreadable_dataset), "--keywords", "x-ray,chest",
                                              "--tracking-uri", cloud.uri, "--no-log", "--json", "-"])
    assert with_keywords.exit_code == 0, with_keywords.output
    payload = json.loads(with_keywords.stdout)
    assert payload["selector"] == "manual" and [r["source"] for r in payload["ranking"]] == ["chest_a", "skin_a"]
    assert any("ranked by keywords (manual) and no image was drawn" in n for n in payload["notes"])
    assert payload["target"]["name"] == "new_task"


def test_the_embedded_cloud_answers_the_first_query_from_the_reference(unreadable_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("TFP_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "rec.json"
    result = CliRunner().invoke(main, ["recommend", str(unreadable_dataset), "--keywords", "chest,x-ray",
                                       "--json", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert (tmp_path / "tfp-cloud" / "mlflow.db").is_file() and payload["selector"] == "manual"
    assert payload["ranking"][0]["source"].startswith("chexpert_") and payload["ranking"][0]["contributor"] == \
        "reference:godau2024"
    policies = payload["scenarios"]["augmentation"]["items"]
    assert len(policies) == 3 and all(p["evidence"]["provenance"].startswith("Godau") for p in policies)
    assert f"tfp train {unreadable_dataset} --scenario augmentation --from-recommendation {out} --rank 1 " \
           f"--contribute" in payload["next_steps"]
    assert "next:" in result.output and "importing the reference" in result.output
    again = CliRunner().invoke(main, ["recommend", "--selector", "manual", "--keywords", "dermatoscopy", "--no-log"])
    assert again.exit_code == 0 and "importing the reference" not in again.output         # imported once
    tasks = Cloud(f"sqlite:///{tmp_path / 'tfp-cloud' / 'mlflow.db'}").tasks()
    assert len(tasks) == 71
    # The README's day-one query: the reference says fundus_photography, the user says fundus.
    fundus = CliRunner().invoke(main, ["recommend", "--selector", "manual", "--keywords", "eye,fundus", "--no-log",
                                       "--json", "-"])
    assert fundus.exit_code == 0, fundus.output
    payload = json.loads(fundus.stdout)
    by_name = {t.name: t for t in tasks}
    assert "fundus_photography" in by_name[payload["ranking"][0]["source"]].keywords
    assert payload["target"]["keywords"] == ["eye", "fundus_photography"]
    assert "keyword 'fundus' matched fundus_photography" in payload["notes"]
    listed = CliRunner().invoke(main, ["keywords", "--json"])
    assert listed.exit_code == 0, listed.output
    counts = json.loads(listed.stdout)["keywords"]
    assert counts["medical"] == sum("medical" in t.keywords for t in tasks) and "fundus_photography" in counts


def test_on_a_fresh_install_without_keywords_the_answer_is_an_error_at_once(unreadable_dataset, tmp_path,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = CliRunner().invoke(main, ["recommend", str(unreadable_dataset)])
    assert result.exit_code == 2 and "holds no task yet" in result.output and "--keywords" in result.output
    assert "importing the reference" not in result.output                 # nothing imported, nothing drawn


def test_a_wrong_option_is_one_line_before_any_cloud_is_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for args, said in ((["--top-k", "0"], "--top-k must be at least 1"),
                       (["--metric", "f1"], "'--metric'"),
                       (["--selector", "nosuch"], "nosuch")):
        result = CliRunner().invoke(main, ["recommend", "--keywords", "chest", *args])
        assert result.exit_code == 2 and said in result.output, (args, result.output)
    assert not (tmp_path / "tfp-cloud").exists()          # nothing was created for a query that could not run


@pytest.mark.torch
def test_a_query_fingerprint_is_drawn_once_for_the_same_files(tmp_path, monkeypatch):
    """`tfp recommend DATA` then `tfp tune DATA`: the second reuses the draws; a changed file draws again."""
    import os

    import tfp_mlflow.extract as extract
    from tfp_mlflow.demo.tasks import DemoTask
    from tfp_mlflow.workflows.targets import target_fingerprint

    monkeypatch.setenv("TFP_CACHE_DIR", str(tmp_path / "cache"))
    data = DemoTask("fundus_q", "fundus", num_classes=2, num_images=12, image_size=40, seed=3).write(tmp_path / "q")
    cloud = Cloud(sqlite_uri(tmp_path / "cloud" / "mlflow.db"), cache_dir=tmp_path / "cloud-cache")
    drawn, real = [], extract.fingerprint_dataset
    monkeypatch.setattr(extract, "fingerprint_dataset", lambda *a, **k: drawn.append(1) or real(*a, **k))
    notes: list[str] = []
    first = target_fingerprint(data, cloud, samples=16, progress=False, on_note=notes.append)
    again = target_fingerprint(data, cloud, samples=16, name="renamed", keywords=["eye"], progress=False,
                               on_note=notes.append)
    assert len(drawn) == 1 and any(n.startswith("reusing the fingerprint of q") for n in notes)
    assert (again.name, again.keywords) == ("renamed", ("eye",))
    np.testing.assert_array_equal(again.counts_of("small"), first.counts_of("small"))
    target_fingerprint(data, cloud, samples=24, progress=False)                       # other draws: drawn
    image = next(data.rglob("*.png"))
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))  # a changed file: drawn
    target_fingerprint(data, cloud, samples=16, progress=False)
    assert len(drawn) == 3


def test_data_that_names_nothing_is_one_line_and_not_a_task_name(tmp_path):
    uri = sqlite_uri(tmp_path / "mlflow.db")
    for args, what in ((["recommend", str(tmp_path / "MISSING.npz")], "no fingerprint file at"),
                       (["recommend", str(tmp_path / "nowhere"), "--keywords", "chest"], "no dataset")):
        result = CliRunner().invoke(main, [*args, "--tracking-uri", uri])
        assert result.exit_code == 2 and result.output.count("\n") == 1 and what in result.output, result.output
    tuned = CliRunner().invoke(main, ["tune", str(tmp_path), "--fingerprint", str(tmp_path / "MISSING.npz"),
                                      "--tracking-uri", uri])
    assert tuned.exit_code == 2 and tuned.output.count("\n") == 1 and "MISSING.npz" in tuned.output


def test_a_cloud_path_whose_folder_is_missing_is_refused_unless_a_new_cloud_is_asked_for(tmp_path):
    uri = f"sqlite:///{tmp_path / 'typo' / 'mlflow.db'}"
    refused = CliRunner().invoke(main, ["recommend", "--keywords", "chest", "--selector", "manual",
                                        "--tracking-uri", uri])
    assert refused.exit_code == 2 and refused.output.count("\n") == 1 and "--new-cloud" in refused.output
    assert not (tmp_path / "typo").exists()
    created = CliRunner().invoke(main, ["recommend", "--keywords", "chest", "--selector", "manual",
                                        "--tracking-uri", uri, "--new-cloud"])
    assert "holds no task yet" in created.output            # a new, empty cloud was opened there


def test_an_empty_folder_with_keywords_says_nothing_was_drawn(tmp_path):
    cloud = Cloud(sqlite_uri(tmp_path / 'cloud' / 'mlflow.db'), cache_dir=tmp_path / "cache")
    cloud.contribute(None, name="chest_a", keywords=["x-ray", "chest"], num_images=100, num_classes=2)
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["recommend", str(tmp_path / "empty"), "--keywords", "x-ray,chest",
                                       "--tracking-uri", cloud.uri, "--no-log", "--json", "-"])
    assert result.exit_code == 0, result.output
    notes = json.loads(result.stdout)["notes"]
    assert any("holds no image, and none was drawn" in n for n in notes)
    assert any("do not use the new task's images" in n for n in notes)


def test_samples_help_states_the_default_that_applies_on_a_cpu():
    from tfp_mlflow.workflows.targets import QUERY_DRAWS_CPU

    shown = CliRunner().invoke(main, ["recommend", "--help"], env={"COLUMNS": "300"})
    assert f"{QUERY_DRAWS_CPU:,} on a CPU" in " ".join(shown.output.split())


@pytest.mark.torch
def test_without_architecture_evidence_the_candidates_are_ranked_on_your_own_images(tmp_path):
    from tfp_mlflow.demo.tasks import DemoTask
    from tfp_mlflow.train import TrainConfig, config_from_recommendation
    from tfp_mlflow.workflows import recommend_for

    data = DemoTask("fundus_mine", "fundus", num_classes=3, num_images=30, image_size=48, seed=5).write(
        tmp_path / "fundus_mine")
    cloud = Cloud(sqlite_uri(tmp_path / 'cloud' / 'mlflow.db'), cache_dir=tmp_path / "cache")
    cloud.contribute(None, name="fundus_a", keywords=["fundus", "eye"], num_images=100, num_classes=2)
    result = recommend_for(str(data), cloud, keywords="fundus,eye", log=False, progress=False)
    advice = result.scenarios["architecture"]
    assert advice.ordered_by == "logme on your images" and len(advice.items) == 3
    assert advice.notes[0].startswith("the cloud holds no architecture evidence within reach, so these were ranked "
                                      "on 30 of your own labelled images by LogME")
    values = [i.transferability["value"] for i in advice.items]
    assert values == sorted(values, reverse=True) and all(i.architecture.startswith("tf_efficientnet") for i in
                                                          advice.items)
    config = config_from_recommendation(result.to_json(), "architecture", 1, TrainConfig(target=str(data)), cloud)
    assert config.architecture == advice.items[0].architecture and config.source == ""   # no source task
