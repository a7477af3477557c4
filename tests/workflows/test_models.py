"""`tfp rank-models` and `tfp recommend --rerank`: transferability scores of real offline backbones on a demo task."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tfp_mlflow.cli import main
from tfp_mlflow.cloud import Cloud, Knowledge, KnowledgeKind, KnowledgeRow
from tfp_mlflow.demo.tasks import DemoTask
from tfp_mlflow.extract import Draws, fingerprint_dataset
from tfp_mlflow.extract.probe import probe_model
from tfp_mlflow.testing.stores import sqlite_uri
from tfp_mlflow.transferability import logme

pytestmark = [pytest.mark.slow, pytest.mark.torch]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return DemoTask("fundus_rank", "fundus", num_classes=3, num_images=24, image_size=48, seed=2).write(
        tmp_path_factory.mktemp("rank") / "fundus_rank")


def test_rank_models_scores_each_candidate_orders_them_and_logs_the_run(task, tmp_path):
    uri = sqlite_uri(tmp_path / 'cloud' / 'mlflow.db')
    result = CliRunner().invoke(main, ["rank-models", str(task), "--candidates",
                                       "tf_efficientnet_lite0,tf_efficientnet_lite1", "--score", "logme",
                                       "--score", "leep", "--samples", "12", "--tracking-uri", uri, "--json", "-"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    rows = payload["ranking"]
    assert {r["architecture"] for r in rows} == {"tf_efficientnet_lite0", "tf_efficientnet_lite1"}
    assert rows[0]["logme"] >= rows[1]["logme"] and all(r["leep"] < 0 for r in rows)
    assert all(r["images"] == 12 for r in rows)
    probe = probe_model(task, rows[0]["architecture"], samples=12)
    assert rows[0]["logme"] == pytest.approx(logme(probe.features, probe.labels))      # deterministic probe
    assert np.allclose(probe.probabilities.sum(axis=1), 1.0) and probe.features.shape[0] == 12
    cloud = Cloud(uri)
    artifacts = {a.path for a in cloud.client.list_artifacts(payload["run_id"])}
    assert {"model_ranking.json", "model_ranking.png"} <= artifacts


def test_a_state_dict_file_has_no_source_head_so_label_scores_are_not_invented(task, tmp_path):
    import torch

    from tfp_mlflow.extract.backbones import create_model

    path = tmp_path / "lite0.pt"
    torch.save(create_model("tf_efficientnet_lite0", num_classes=1000)[0].state_dict(), path)
    result = CliRunner().invoke(main, ["rank-models", str(task), "--candidates", "tf_efficientnet_lite0",
                                       "--weights", str(path), "--score", "leep", "--score", "logme",
                                       "--samples", "9", "--tracking-uri", f"sqlite:///{tmp_path / 'c.db'}",
                                       "--json", "-"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)["ranking"]
    assert row["leep"] is None and row["logme"] is not None and row["weights"] == "file:lite0.pt"


def test_recommend_rerank_orders_architectures_by_the_score_and_says_so(task, tmp_path):
    cloud = Cloud(sqlite_uri(tmp_path / 'cloud' / 'mlflow.db'))
    for i, architecture in enumerate(["tf_efficientnet_lite0", "tf_efficientnet_lite1"]):
        source = DemoTask(f"fundus_src{i}", "fundus", num_images=12, image_size=48, seed=10 + i).write(
            tmp_path / f"fundus_src{i}")
        cloud.contribute(fingerprint_dataset(source, progress=False, draws=Draws(samples=20, workers=0)), knowledge=[
            Knowledge(f"fundus_src{i}", KnowledgeKind.ARCHITECTURE,
                      (KnowledgeRow(architecture=architecture, balanced_accuracy=0.8),))])
    result = CliRunner().invoke(main, ["recommend", str(task), "--samples", "20", "--rerank", "logme",
                                       "--scenario", "architecture", "--tracking-uri", cloud.uri, "--json", "-"])
    assert result.exit_code == 0, result.output
    block = json.loads(result.stdout)["scenarios"]["architecture"]
    values = [i["transferability"]["value"] for i in block["items"]]
    assert block["ordered_by"] == "logme" and len(values) == 2 and values == sorted(values, reverse=True)
    assert any("re-ordered by logme" in note for note in block["notes"])
    fingerprint = tmp_path / "target.npz"
    assert CliRunner().invoke(main, ["fingerprint", str(task), "--out", str(fingerprint), "--samples", "10",
                                     "--workers", "0"]).exit_code == 0
    refused = CliRunner().invoke(main, ["recommend", str(fingerprint), "--rerank", "logme",
                                        "--tracking-uri", cloud.uri])
    assert refused.exit_code == 2 and "give DATA as a dataset" in refused.output
