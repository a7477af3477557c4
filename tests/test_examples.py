"""The examples of examples/, run as their users run them (a plain PyTorch + timm script, a LightningModule with
MLflow's autologging, a lab's own Optuna objective), each on tiny synthetic data; then their runs, and one made
without tfp at all, are harvested into a fresh cloud and a near task's recommendation suggests what they measured."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner

from tfp_mlflow.cli import main
from tfp_mlflow.cloud import Cloud, KnowledgeKind

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.torch]


def _example(script: str, *args: str, env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.stdout


def test_the_examples_runs_are_harvested_into_knowledge_a_near_task_is_offered(tmp_path):
    assert CliRunner().invoke(main, ["demo-tasks", str(tmp_path / "data"), "--per-family", "2", "--images", "40",
                                     "--size", "32", "--families", "fundus,dermoscopy"]).exit_code == 0
    runs = f"sqlite:///{tmp_path / 'runs.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": runs, "TFP_CACHE_DIR": str(tmp_path / "cache")}
    quick = ["--epochs", "1", "--image-size", "32", "--samples", "50"]
    _example("plain_pytorch.py", "data/dermoscopy_0", *quick, env=env, cwd=tmp_path)
    _example("lightning_autolog.py", "data/dermoscopy_1", "--model", "mobilenetv3_small_100", *quick, env=env,
             cwd=tmp_path)
    # A run made without tfp: the team's own names, and its training data as an MLflow dataset input.
    mlflow.set_tracking_uri(runs)
    try:
        import pandas as pd

        dataset = mlflow.data.from_pandas(pd.DataFrame({"path": ["x"]}), source=str(tmp_path / "data" / "fundus_0"),
                                          name="fundus_0")
        with mlflow.start_run(run_name="before-tfp") as theirs:
            mlflow.log_input(dataset, context="training")
            mlflow.log_params({"arch": "efficientnet_b0", "n_val": 200, "pretrained": "imagenet"})
            mlflow.log_metric("val_bacc", 0.91)
    finally:
        mlflow.set_tracking_uri(None)
    cloud_uri = f"sqlite:///{tmp_path / 'cloud' / 'mlflow.db'}"
    harvest = ["harvest", "Default", "--from", runs, "--tracking-uri", cloud_uri, "--new-cloud", "--samples", "50"]
    done = CliRunner(env={"TFP_CACHE_DIR": str(tmp_path / "cache")}).invoke(main, [*harvest, "--contribute",
                                                                                    "--json", "-"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["counts"] == {"contributed": 3}, report
    cloud = Cloud(cloud_uri, cache_dir=tmp_path / "cache")
    assert sorted(t.name for t in cloud.tasks()) == ["dermoscopy_0", "dermoscopy_1", "fundus_0"]
    (lightning,) = cloud.knowledge("dermoscopy_1", [KnowledgeKind.ARCHITECTURE])
    assert lightning.rows[0].architecture == "mobilenetv3_small_100" and lightning.rows[0].held_out == 8
    (before,) = cloud.knowledge("fundus_0", [KnowledgeKind.ARCHITECTURE])
    assert (before.rows[0].architecture, before.rows[0].balanced_accuracy, before.rows[0].held_out,
            before.provenance) == ("efficientnet_b0", 0.91, 200, f"mlflow run {theirs.info.run_id}")
    again = CliRunner(env={"TFP_CACHE_DIR": str(tmp_path / "cache")}).invoke(main, [*harvest, "--contribute"])
    assert again.exit_code == 0 and "3 in the cloud" in again.output, again.output
    # A near task's recommendation suggests what the team measured (the one-epoch runs score at chance: not offered).
    env["MLFLOW_TRACKING_URI"] = cloud_uri
    answer = subprocess.run(["tfp", "recommend", "data/fundus_1", "--samples", "50", "--json", "-", "--no-log"],
                            cwd=tmp_path, env={**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"},
                            capture_output=True, text=True, timeout=600)
    assert answer.returncode == 0, answer.stderr[-2000:]
    items = json.loads(answer.stdout)["scenarios"]["architecture"]["items"]
    assert items[0]["architecture"] == "efficientnet_b0" and items[0]["source"] == "fundus_0"
    # A lab's own Optuna objective, warm-started from that cloud: its first trial is the suggestion.
    out = _example("own_optuna.py", "data/fundus_1", "--cloud", cloud_uri, "--n-trials", "2", "--epochs", "1",
                   "--image-size", "32", "--samples", "50", "--storage", f"sqlite:///{tmp_path / 'optuna.db'}",
                   env=env, cwd=tmp_path)
    assert "{'model': 'efficientnet_b0'" in out, out
    import optuna

    study = optuna.load_study(study_name="own-objective", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert study.trials[0].params["model"] == "efficientnet_b0" and len(study.trials) == 2
