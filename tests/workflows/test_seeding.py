"""`tfp seed` on locally built stand-ins: a MedMNIST file in MedMNIST's own format and a folder standing in for a
published task. Killed mid-way and rerun, it resumes; the published task gets the fingerprint, and a query then
ranks it by fingerprint with its published knowledge; a later run adds studies and transfer outcomes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from tfp_mlflow.cli import main
from tfp_mlflow.cloud import Cloud
from tfp_mlflow.cloud.schema import Kind
from tfp_mlflow.demo.tasks import DemoTask
from tfp_mlflow.testing.stores import sqlite_uri

pytestmark = [pytest.mark.slow, pytest.mark.torch]


@pytest.fixture
def plan(tmp_path, monkeypatch):
    root = tmp_path / "medmnist"
    root.mkdir()
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in {"train": 18, "val": 6, "test": 6}.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 3)[:, None].astype(np.uint8)
    np.savez_compressed(root / "dermamnist.npz", **arrays)
    DemoTask("svhn_standin", "natural", num_classes=2, num_images=24, image_size=48, seed=5).write(tmp_path / "svhn")
    path = tmp_path / "plan.yaml"
    path.write_text("datasets:\n"
                    "  - {source: 'medmnist:dermamnist', domain: dermatology, keywords: [skin],"
                    " licence: CC BY-NC 4.0}\n"
                    "  - {source: svhn, task: svhn, domain: natural, keywords: [digits], licence: see the source}\n")
    env = {"TFP_DATA_ROOT": str(root), "TFP_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "MLFLOW_TRACKING_URI": sqlite_uri(tmp_path / 'cloud' / 'mlflow.db')}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return path, env


ARGS = ["--samples", "48", "--epochs", "1", "--image-size", "32", "--tune-trials", "0"]


def test_seed_resumes_after_a_kill_and_attaches_published_tasks(plan, tmp_path):
    path, env = plan
    dry = CliRunner().invoke(main, ["seed", str(path), "--dry-run", *ARGS])
    assert dry.exit_code == 0 and "planned" in dry.output and "expected: about" in dry.output, dry.output
    cloud = Cloud(env["MLFLOW_TRACKING_URI"], cache_dir=tmp_path / "reader")
    # Killed once the first dataset's fingerprint is in the cloud (it is then measuring its baseline).
    proc = subprocess.Popen([sys.executable, "-m", "tfp_mlflow.cli", "seed", str(path), *ARGS],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if cloud.task("dermamnist") is not None:
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.stdout.read()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    result = CliRunner().invoke(main, ["seed", str(path), *ARGS])
    assert result.exit_code == 0, result.output
    assert "dermamnist: fingerprint skipped" in result.output and "svhn: fingerprint done" in result.output
    again = CliRunner().invoke(main, ["seed", str(path), *ARGS])                  # everything done: all skipped
    assert again.exit_code == 0 and again.output.count(" skipped") == 4, again.output
    task_runs = [r for r in cloud.find_runs(Kind.TASK, task="dermamnist")]
    assert len(task_runs) == 1 and task_runs[0].tags["tfp.data_uri"] == "medmnist:dermamnist"
    for name in ("dermamnist", "svhn"):
        baselines = cloud.knowledge(name, ["baseline"])
        mine = [k for k in baselines if not k.contributor.startswith("reference:")]
        assert len(mine) == 1 and mine[0].rows[0].evidence_run, name
    svhn = cloud.task("svhn")
    assert svhn.has_fingerprint and svhn.shareable and svhn.domain == "natural"
    published = [k for k in cloud.knowledge("svhn") if k.contributor.startswith("reference:")]
    assert published, "the published task's knowledge is still there"
    # A new task of the same family: svhn is ranked by its fingerprint, with its published knowledge.
    from tfp_mlflow.extract import Draws, fingerprint_dataset
    from tfp_mlflow.recommend import recommend

    folder = DemoTask("new_natural", "natural", num_classes=2, num_images=24, image_size=48, seed=9).write(
        tmp_path / "new")
    target = fingerprint_dataset(folder, spec=cloud.spec(), progress=False, draws=Draws(samples=48))
    answer = recommend(cloud, target, top_k=3, log=False)
    ranked = {r.source: r for r in answer.ranking}
    assert ranked["svhn"].signal == "bkld-small-target"
    published_runs = {k.run_id for k in published}
    used = [item for advice in answer.scenarios.values() for item in advice.items
            if item.source == "svhn" and item.evidence.get("knowledge_run") in published_runs]
    assert used, answer.scenarios
    # More knowledge later: a short study and the transfer outcomes between the seeded tasks; what is done is skipped.
    # --shrink and --device reach every training step: the study's trials as much as the transfers.
    started = {r.info.run_id for r in cloud.client.search_runs(
        [e.experiment_id for e in cloud.client.search_experiments()], max_results=5000)}
    more = CliRunner().invoke(main, ["seed", str(path), *ARGS, "--tune-trials", "1", "--transfer", "--shrink", "10",
                                     "--device", "cpu"])
    assert more.exit_code == 0 and more.output.count(" skipped") == 4, more.output
    trainings = [r for r in cloud.client.search_runs([e.experiment_id for e in cloud.client.search_experiments()],
                                                     max_results=5000)
                 if r.info.run_id not in started and "train_images" in r.data.params]
    assert {r.data.params["scenario"] for r in trainings} == {"architecture", "pretraining"}, trainings
    assert len(trainings) >= 4 and all(r.data.params["shrink"] == "10" and r.data.params["device"] == "cpu"
                                       and int(r.data.params["train_images"]) <= 10 for r in trainings), \
        [(r.data.params.get("scenario"), r.data.params.get("shrink"), r.data.params.get("device")) for r in trainings]
    for name, other in (("dermamnist", "svhn"), ("svhn", "dermamnist")):
        studies = [k for k in cloud.knowledge(name, ["architecture"]) if k.provenance.startswith("tfp tune study")]
        assert len(studies) == 1 and studies[0].rows[0].evidence_run, name
        transfer = [row for k in cloud.knowledge(name, ["pretraining"]) if not k.contributor.startswith("reference:")
                    for row in k.rows]
        assert [row.source for row in transfer] == [other] and 0 <= transfer[0].balanced_accuracy <= 1

