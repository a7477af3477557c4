"""`tfp demo --quick` end to end, and the `mlflow run` recipes (real MLflow projects, local env manager)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from tfp_mlflow.cli import main
from tfp_mlflow.cloud import Cloud
from tfp_mlflow.cloud.schema import Artifact, Tag
from tfp_mlflow.cloud.studies import mlflow_storage
from tfp_mlflow.demo.cloud import QUICK_PLAN
from tfp_mlflow.demo.tasks import DemoTask
from tfp_mlflow.extract import Draws, fingerprint_dataset
from tfp_mlflow.testing.stores import sqlite_uri

pytestmark = [pytest.mark.slow, pytest.mark.torch]
RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    home = tmp_path_factory.mktemp("demo") / "tfp-demo"
    # Its studies in the demo's cloud itself (the default, optuna.db beside it, is what `tfp tune` tests use).
    result = CliRunner().invoke(main, ["demo", "--quick", "--home", str(home), "--seed", "0", "--storage", "mlflow"])
    assert result.exit_code == 0, result.output
    return home, result.output, json.loads((home / "summary.json").read_text())


def test_demo_prints_its_summary_and_how_to_browse_it(demo):
    home, output, summary = demo
    assert "test images no study saw" in output and "no-transfer baseline" in output
    assert "± after a gain: its standard error" in output                       # the comparison's uncertainty
    assert all(r["held_out"] == QUICK_PLAN.test_images and r["per_seed"] for r in summary["results"])
    assert "what was suggested, and why" in output and "#distance rank" in output   # each suggestion's reasons
    assert f"mlflow ui --backend-store-uri sqlite:///{home}/mlflow.db" in output
    assert "(studies: the tfp-studies experiment)" in output
    assert summary["schema"] == "tfp.demo/1" and summary["target"] == "radiograph_new"
    assert [r["configuration"] for r in summary["results"]][:3] == ["no-transfer baseline",
                                                                   "tuned (warm-started study)",
                                                                   "tuned (cold study, same budget)"]
    assert "a cold study of the same budget" in output and "expected: about" in output


def test_demo_recommends_sources_of_the_targets_own_family(demo):
    home, _, summary = demo
    recommendation = json.loads((home / "recommendation.json").read_text())
    assert recommendation["ranking"][0]["domain"] == summary["target_family"] == "radiograph"
    assert summary["recommended"][0]["source"].startswith("radiograph_")
    architecture = recommendation["scenarios"]["architecture"]["items"]
    assert architecture and architecture[0]["evidence"]["training_run"]      # measured, with its run


def test_demo_leaves_fingerprints_measured_knowledge_and_the_reference_in_the_cloud(demo):
    home, _, summary = demo
    cloud = Cloud(sqlite_uri(home / 'mlflow.db'))
    tasks = {t.name: t for t in cloud.tasks()}
    assert len([t for t in tasks.values() if t.contributor.startswith("reference:")]) == 71
    for name in summary["sources"]:
        assert tasks[name].has_fingerprint and tasks[name].shareable
        [best] = cloud.knowledge(name, ["architecture"])
        run = cloud.client.get_run(best.rows[0].evidence_run)         # the training that measured it
        assert run.data.tags[Tag.TASK] == name and run.data.metrics["balanced_accuracy"] == pytest.approx(
            best.rows[0].balanced_accuracy)
    assert len(summary["sources"]) == len(QUICK_PLAN.families) * QUICK_PLAN.sources_per_family


def test_demo_study_is_warm_started_and_the_tuned_model_is_logged(demo):
    _, _, summary = demo
    cloud = Cloud(summary["tracking_uri"])
    assert summary["study"]["storage"] == "mlflow"
    study = optuna.load_study(study_name=summary["study"]["name"], storage=mlflow_storage(cloud))
    trials = sorted(study.trials, key=lambda t: t.number)
    finished = [t for t in trials if t.state.is_finished()]
    assert len(finished) >= QUICK_PLAN.tune_trials and trials[0].user_attrs["warm_start"]
    import mlflow
    import torch

    mlflow.set_tracking_uri(summary["tracking_uri"])
    model = mlflow.pytorch.load_model(f"runs:/{summary['results'][1]['run_id']}/{Artifact.MODEL}")   # pt2, no pickle
    classes = len(list((Path(summary["home"]) / "tasks" / summary["target"]).iterdir()))
    assert model(torch.zeros(2, 3, QUICK_PLAN.image_size, QUICK_PLAN.image_size)).shape == (2, classes)
    for row in summary["results"]:
        run = cloud.client.get_run(row["run_id"])
        assert run.info.status == "FINISHED" and run.data.tags[Tag.COMPLETE] == "1"


def _mlflow_run(entry: str, params: dict[str, str], cwd: Path, tracking_uri: str) -> str:
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    command = [mlflow, "run", str(RECIPES), "-e", entry, "--env-manager", "local"]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
    return done.stdout + done.stderr


def test_recipes_run_as_mlflow_projects_from_any_folder_with_a_relative_sqlite_uri(tmp_path):
    """`mlflow run /path/to/recipes` from the user's folder, MLFLOW_TRACKING_URI=sqlite:///cloud/mlflow.db (relative,
    as the README writes it): the store, the outputs and the plots are the caller's; the checkout stays clean."""
    work = tmp_path / "work"
    work.mkdir()
    relative_uri = "sqlite:///cloud/mlflow.db"
    folders = {name: DemoTask(name, family, num_classes=2, num_images=16, image_size=40, seed=i).write(
        tmp_path / name) for i, (name, family) in enumerate([("fundus_a", "fundus"), ("histology_a", "histology"),
                                                             ("fundus_b", "fundus")])}
    before = sorted(p.name for p in RECIPES.iterdir())
    _mlflow_run("fingerprint", {"data": folders["fundus_a"], "out": "fundus_a.npz", "samples": 40}, work,
                relative_uri)
    _mlflow_run("contribute", {"fingerprint": work / "fundus_a.npz", "data_uri": folders["fundus_a"],
                               "shareable": 1}, work, relative_uri)
    cloud = Cloud(f"sqlite:///{work / 'cloud' / 'mlflow.db'}")
    # The entry point's run names the tfp run it created, and that run names it back.
    task_run = cloud.client.get_run(cloud.task("fundus_a").run_id)
    project = cloud.client.get_run(task_run.data.tags[Tag.PROJECT_RUN])
    assert project.data.tags[f"{Tag.CREATED_PREFIX}{task_run.info.run_id}"] == "task"
    cloud.contribute(fingerprint_dataset(folders["histology_a"], progress=False, draws=Draws(samples=40, workers=0)))
    _mlflow_run("recommend", {"data": folders["fundus_b"], "samples": 40, "out": "recommendation.json"}, work,
                relative_uri)
    ranking = json.loads((work / "recommendation.json").read_text())["ranking"]
    assert [r["source"] for r in ranking] == ["fundus_a", "histology_a"]
    assert cloud.task("fundus_a").shareable and cloud.task("fundus_a").data_uri == str(folders["fundus_a"])
    evaluated = _mlflow_run("evaluate", {"bootstraps": 10}, work, relative_uri)
    assert "bkld-small" in evaluated and "manual" in evaluated            # two selectors compared, not one
    assert (work / "evaluation.json").is_file() and (work / "evaluation-plots").is_dir()
    projects = cloud.client.search_runs([cloud.client.get_experiment_by_name("Default").experiment_id])
    assert sorted(r.data.tags.get("mlflow.project.entryPoint") for r in projects) == [
        "contribute", "evaluate", "fingerprint", "recommend"]
    assert sorted(p.name for p in RECIPES.iterdir()) == before            # nothing written into the checkout
