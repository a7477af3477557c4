"""`tfp train`: the baseline and the four scenarios on tiny demo tasks, logged to a real SQLite MLflow store."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from mlflow import MlflowClient

from tfp_mlflow import BadInputError
from tfp_mlflow.cli import main
from tfp_mlflow.cloud import Cloud, Knowledge, KnowledgeKind, KnowledgeRow
from tfp_mlflow.cloud.schema import TRAINING_EXPERIMENT
from tfp_mlflow.demo.tasks import DemoTask
from tfp_mlflow.recommend import recommend
from tfp_mlflow.reference import Reference, bundled_reference
from tfp_mlflow.scenarios import scenario_names
from tfp_mlflow.testing.stores import sqlite_uri
from tfp_mlflow.train import TrainConfig, config_from_recommendation, train
from tfp_mlflow.train.data import build_transforms, mixed_sampler, split_task
from tfp_mlflow.train.module import TransferModule, class_balanced_metrics
from tfp_mlflow.train.network import build_network

pytestmark = pytest.mark.torch   # the quick path trains once (truncated); the rest trains in the full run
TINY = {"epochs": 2, "image_size": 32, "batch_size": 16}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    tasks = {"target": DemoTask("fundus_target", "fundus", num_classes=2, num_images=40, image_size=48, seed=1),
             "source": DemoTask("fundus_source", "fundus", num_classes=3, num_images=45, image_size=48, seed=2),
             "closed": DemoTask("fundus_closed", "fundus", num_classes=2, num_images=20, image_size=48, seed=3),
             "skin": DemoTask("dermoscopy_far", "dermoscopy", num_classes=2, num_images=20, image_size=48, seed=4)}
    return {key: task.write(root / task.name) for key, task in tasks.items()}


@pytest.fixture(scope="module")
def reference_policy(tmp_path_factory):
    study = Reference.load(bundled_reference(tmp_path_factory.mktemp("reference")))
    (task, repetition), path = sorted(study.policy_files().items())[0]
    return f"{task}-rep{repetition}", json.loads(path.read_text())


@pytest.fixture(scope="module")
def cloud(tmp_path_factory, data, reference_policy):
    """A cloud where fundus tasks carry architecture results, a policy and shareable data."""
    cloud = Cloud(sqlite_uri(tmp_path_factory.mktemp('cloud') / 'mlflow.db'))
    policy_id, policy = reference_policy
    cloud.contribute(None, name="fundus_source", keywords=["fundus_photography", "eye", "retina"],
                     data_uri=data["source"].as_uri(), shareable=True, num_images=45, num_classes=3, knowledge=[
                         Knowledge("fundus_source", KnowledgeKind.ARCHITECTURE,
                                   (KnowledgeRow(architecture="tf_efficientnet_lite0", balanced_accuracy=0.9),
                                    KnowledgeRow(architecture="resnet18", balanced_accuracy=0.6))),
                         Knowledge("fundus_source", KnowledgeKind.POLICY, (KnowledgeRow(policy_id=policy_id),),
                                   policies={policy_id: policy})])
    cloud.contribute(None, name="fundus_closed", keywords=["fundus_photography", "eye"],
                     data_uri=data["closed"].as_uri(), shareable=False, num_images=20, num_classes=2)
    return cloud


@pytest.fixture(scope="module")
def recommendation(cloud, tmp_path_factory):
    result = recommend(cloud, keywords=["fundus_photography", "eye", "retina"], name="fundus_target",
                       selector="manual", top_k=1)
    path = tmp_path_factory.mktemp("rec") / "rec.json"
    path.write_text(json.dumps(result.to_json()))
    return path


def _training_runs(cloud):
    experiment = cloud.client.get_experiment_by_name(TRAINING_EXPERIMENT)
    return [] if experiment is None else cloud.client.search_runs([experiment.experiment_id])


# -- data ----------------------------------------------------------------------------------------------------------
def test_held_out_split_is_stratified_80_20_and_shrink_keeps_every_class(data):
    split = split_task(data["source"], seed=0)
    assert len(split.train) + len(split.val) == 45 and set(split.train.paths).isdisjoint(split.val.paths)
    assert {c: n for c, n in split.val.class_counts.items()} == {c: 3 for c in split.classes}
    assert split_task(data["source"], seed=0).val.paths == split.val.paths          # seeded
    shrunk = split_task(data["source"], seed=0, shrink=9)
    assert len(shrunk.train) == 9 and set(shrunk.train.classes) == set(split.classes)
    assert shrunk.val.paths == split.val.paths                                     # only training is shrunk


def test_manifest_split_column_is_the_held_out_split(data, tmp_path):
    rows = ["path,label,split"]
    for k, path in enumerate(sorted(data["target"].rglob("*.png"))):
        rows.append(f"{path},{path.parent.name},{'val' if k % 4 == 0 else 'train'}")
    manifest = tmp_path / "task.csv"
    manifest.write_text("\n".join(rows))
    split = split_task(manifest)
    assert len(split.val) == 10 and len(split.train) == 30 and split.name == "task"


def test_cotraining_sampler_draws_both_tasks_with_equal_probability():
    sampler = mixed_sampler([10, 90], 4000, seed=0)
    share = np.mean(np.array(list(sampler)) < 10)
    assert 0.46 < share < 0.54


def test_a_reference_policy_is_applied_in_the_training_pipeline(reference_policy):
    _, policy = reference_policy
    image = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    plain = build_transforms(32, (0.5,) * 3, (0.5,) * 3, seed=0)
    augmented = build_transforms(32, (0.5,) * 3, (0.5,) * 3, policy=policy, seed=0)
    names = [type(t).__name__ for t in augmented.transforms]
    assert len(names) == len(plain.transforms) + 1
    outputs = [augmented(image=image)["image"] for _ in range(8)]
    baseline = [plain(image=image)["image"] for _ in range(8)]
    assert any(not torch.equal(o, b) for o, b in zip(outputs, baseline))
    assert outputs[0].shape == (3, 32, 32) and outputs[0].dtype == torch.float32


# -- network --------------------------------------------------------------------------------------------------------
def test_truncation_really_shortens_the_network():
    full, _, _ = build_network("tf_efficientnet_lite0", [2])
    cut, _, _ = build_network("tf_efficientnet_lite0", [2], truncate=2)
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(cut) < count(full) / 10
    assert cut.heads[0].in_features == 40 and cut(torch.zeros(2, 3, 64, 64)).shape == (2, 2)
    names = {n.split(".")[2] for n, _ in cut.backbone.named_parameters() if n.startswith("model.blocks.")}
    assert names == {"0", "1", "2"}                                    # blocks above the cut are gone
    with pytest.raises(BadInputError, match="--truncate 9 is outside 0..4"):
        build_network("tf_efficientnet_lite0", [2], truncate=9)


def test_cotraining_loss_is_the_equal_mean_of_each_heads_loss_on_its_own_samples():
    network, _, _ = build_network("tf_efficientnet_lite0", [2, 3])
    module = TransferModule(network)
    module.log = lambda *args, **kwargs: None
    images = torch.randn(6, 3, 32, 32)
    labels, tasks = torch.tensor([0, 1, 0, 2, 1, 0]), torch.tensor([0, 0, 0, 1, 1, 1])
    network.eval()
    loss = module.training_step((images, labels, tasks), 0)
    with torch.no_grad():
        features = network.backbone(images)
        expected = (torch.nn.functional.cross_entropy(network.heads[0](features[:3]), labels[:3]) +
                    torch.nn.functional.cross_entropy(network.heads[1](features[3:]), labels[3:])) / 2
    assert torch.allclose(loss, expected, atol=1e-6)
    loss.backward()
    assert network.heads[0].weight.grad.abs().sum() > 0 and network.heads[1].weight.grad.abs().sum() > 0
    network.zero_grad(set_to_none=True)
    module.training_step((images[:3], labels[:3], tasks[:3]), 0).backward()
    assert network.heads[1].weight.grad is None                       # a head learns only from its own task


def test_class_balanced_metrics_match_their_definitions():
    labels = np.array([0, 0, 0, 1, 2, 2])
    probabilities = np.array([[.8, .1, .1], [.6, .3, .1], [.2, .7, .1], [.1, .8, .1], [.1, .2, .7], [.5, .2, .3]])
    metrics = class_balanced_metrics(labels, probabilities)
    assert metrics["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)
    assert 0.5 < metrics["auroc"] <= 1.0
    assert np.isnan(class_balanced_metrics(np.zeros(3, int), probabilities[:3])["auroc"])


# -- end to end -----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_baseline_trains_logs_a_complete_run_and_a_loadable_model(cloud, data):
    result = train(TrainConfig(target=str(data["target"]), **TINY), cloud=cloud, progress=False)
    run = cloud.client.get_run(result.run_id)
    assert run.data.tags["tfp.complete"] == "1" and run.info.status == "FINISHED"
    assert run.data.params["scenario"] == "baseline" and run.data.params["weights_source"] == "offline-package"
    assert run.data.metrics["balanced_accuracy"] == pytest.approx(result.balanced_accuracy)
    assert len(cloud.client.get_metric_history(result.run_id, "val_balanced_accuracy")) == 2   # per epoch
    artifacts = {a.path for a in cloud.client.list_artifacts(result.run_id)}
    assert {"confusion_matrix.png", "learning_curves.png", "result.json"} <= artifacts
    import mlflow

    mlflow.set_tracking_uri(cloud.uri)
    model = mlflow.pytorch.load_model(f"runs:/{result.run_id}/model")    # pt2 (torch.export): no pickle
    assert model(torch.zeros(3, 3, 32, 32)).shape == (3, 2)
    again = train(TrainConfig(target=str(data["target"]), **TINY), cloud=cloud, progress=False, log_model=False)
    timeless = lambda history: [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in history]  # noqa
    assert timeless(again.history) == timeless(result.history)                 # seeded: the same run again
    assert again.balanced_accuracy == result.balanced_accuracy


@pytest.mark.slow
@pytest.mark.parametrize("scenario", scenario_names())
def test_each_scenario_trains_from_a_recommendation_and_lands_in_the_cloud(scenario, cloud, data, recommendation,
                                                                           reference_policy):
    base = TrainConfig(target=str(data["target"]), **TINY)
    config = config_from_recommendation(recommendation, scenario, 1, base, cloud=cloud)
    assert config.source == "fundus_source" and config.provenance["selector"] == "manual"
    result = train(config, cloud=cloud, contribute=True, progress=False, log_model=False)
    run = cloud.client.get_run(result.run_id)
    assert run.data.tags["tfp.scenario"] == scenario and run.data.tags["tfp.source"] == "fundus_source"
    assert run.data.params["recommendation_source"] == "fundus_source"
    if scenario == "augmentation":
        assert config.policy_id == reference_policy[0]
        assert "policy.json" in {a.path for a in cloud.client.list_artifacts(result.run_id)}
    if scenario == "pretraining":
        assert "pretrain-val_balanced_accuracy" in run.data.metrics          # the source stage ran first
        assert run.data.params["source_classes"] == "3"
    kinds = {"architecture": KnowledgeKind.ARCHITECTURE_TRANSFER, "augmentation": KnowledgeKind.AUGMENTATION,
             "pretraining": KnowledgeKind.PRETRAINING, "cotraining": KnowledgeKind.COTRAINING}
    landed = [k for k in cloud.knowledge("fundus_target", [kinds[scenario]]) if k.run_id in result.knowledge_runs]
    assert len(landed) == 1
    row = landed[0].rows[0]
    assert row.source == "fundus_source" and row.evidence_run == result.run_id
    assert row.balanced_accuracy == pytest.approx(result.balanced_accuracy)
    assert cloud.task("fundus_target") is not None                         # registered by name on first outcome


def test_pretraining_replaces_the_head_with_a_fresh_one():
    network, _, _ = build_network("tf_efficientnet_lite0", [3])
    before = network.heads[0].weight.detach().clone()
    backbone = {k: v.clone() for k, v in network.backbone.state_dict().items()}
    network.replace_head(0, 2)
    assert network.heads[0].out_features == 2 and before.shape[0] == 3
    assert all(torch.equal(v, network.backbone.state_dict()[k]) for k, v in backbone.items())


@pytest.mark.slow
def test_lightning_precision_devices_and_strategy_are_passed_through(cloud, data):
    """bf16-mixed runs on a CPU (autocast); the settings reach the Trainer and the run's params; a combination this
    machine cannot run (two CUDA devices here) is refused in one line."""
    result = train(TrainConfig(target=str(data["target"]), precision="bf16-mixed", devices="1", strategy="auto",
                               **TINY), cloud=cloud, progress=False, log_model=False)
    params = cloud.client.get_run(result.run_id).data.params
    assert (params["precision"], params["devices"], params["num_nodes"], params["strategy"]) == \
        ("bf16-mixed", "1", "1", "auto")
    assert 0.0 <= result.balanced_accuracy <= 1.0
    with pytest.raises(BadInputError, match="Lightning cannot train with .*devices=2"):
        train(TrainConfig(target=str(data["target"]), device="cuda", devices="2", strategy="ddp", **TINY),
              cloud=cloud, progress=False, log_model=False)


@pytest.mark.gpu
def test_mixed_precision_on_a_cuda_gpu_trains_and_records_where_it_ran(cloud, data):
    """16-mixed on CUDA (skipped without a GPU): the network and the held-out pass run on the GPU, and the run
    records the device and precision it trained with."""
    result = train(TrainConfig(target=str(data["target"]), device="cuda", precision="16-mixed", **TINY), cloud=cloud,
                   progress=False, log_model=False)
    params = cloud.client.get_run(result.run_id).data.params
    assert (params["device"], params["precision"]) == ("cuda", "16-mixed")
    assert 0.0 <= result.balanced_accuracy <= 1.0


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_records_one_run_and_one_outcome(tmp_path, data):
    """`tfp train --devices 2 --strategy ddp`: Lightning's launcher runs the command again as rank 1; only rank zero
    records a run and contributes, and both ranks choose the best epoch on the whole held-out split."""
    uri = sqlite_uri(tmp_path / 'mlflow.db')
    done = subprocess.run([sys.executable, "-m", "tfp_mlflow.cli", "train", str(data["target"]), "--device", "cpu",
                           "--devices", "2", "--strategy", "ddp", "--epochs", "2", "--image-size", "32",
                           "--batch-size", "8", "--contribute", "--tracking-uri", uri],
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.count("logged as run") == 1, done.stdout
    cloud = Cloud(uri)
    assert len(_training_runs(cloud)) == 1
    assert sorted((k.kind, len(k.rows)) for k in cloud.knowledge("fundus_target")) == \
        [("architecture", 1), ("baseline", 1)]


def test_truncated_training_runs_and_is_recorded(cloud, data):
    result = train(TrainConfig(target=str(data["target"]), truncate=1, **TINY), cloud=cloud, progress=False,
                   log_model=False)
    assert cloud.client.get_run(result.run_id).data.params["truncation"] == "1"


@pytest.mark.parametrize("changes, message", [
    ({"architecture": "no_such_net"}, "unknown timm model 'no_such_net'"),
    ({"scenario": "augmentation", "policy": {"transform": {"__class_fullname__": "Nope"}}}, "policy"),
    ({"scenario": "cotraining"}, "needs source data"),
    ({"epochs": 0}, "--epochs must be at least 1"),
    ({"precision": "8-bit"}, "not one Lightning takes"),
    ({"devices": "two"}, "give a count"),
    ({"num_nodes": 0}, "--num-nodes must be at least 1"),
])
def test_bad_config_is_one_line_error_before_any_run(changes, message, cloud, data):
    before = len(_training_runs(cloud))
    with pytest.raises(BadInputError, match=message):
        train(TrainConfig(target=str(data["target"]), **{**TINY, **changes}), cloud=cloud, progress=False)
    assert len(_training_runs(cloud)) == before


def test_single_class_target_and_closed_source_are_refused_before_training(cloud, data, tmp_path):
    (tmp_path / "only").mkdir()
    for path in list(data["closed"].glob("class_0/*.png"))[:4]:
        (tmp_path / "only" / path.name).write_bytes(path.read_bytes())
    before = len(_training_runs(cloud))
    with pytest.raises(BadInputError, match="1 class"):
        train(TrainConfig(target=str(tmp_path)), cloud=cloud, progress=False)
    runner = CliRunner()
    result = runner.invoke(main, ["train", str(data["target"]), "--scenario", "pretraining", "--source",
                                  "fundus_closed", "--tracking-uri", cloud.uri])
    assert result.exit_code == 2 and "not shareable" in result.output and len(result.output.splitlines()) == 1
    assert len(_training_runs(cloud)) == before


@pytest.mark.slow
def test_cli_trains_from_a_recommendation_and_writes_json(cloud, data, recommendation):
    result = CliRunner().invoke(main, ["train", str(data["target"]), "--scenario", "architecture",
                                       "--from-recommendation", str(recommendation), "--epochs", "1",
                                       "--image-size", "32", "--workers", "0", "--tracking-uri", cloud.uri,
                                       "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["schema"] == "tfp.training/1" and payload["architecture"] == "tf_efficientnet_lite0"
    assert payload["source"] == "fundus_source" and 0.0 <= payload["balanced_accuracy"] <= 1.0
    client = MlflowClient(cloud.uri)
    assert client.get_run(payload["run_id"]).data.tags["tfp.complete"] == "1"


@pytest.mark.slow
def test_a_corrupt_image_is_one_line_naming_skip_unreadable_which_trains_without_it(cloud, data, tmp_path):
    import shutil

    copy = tmp_path / "with_corrupt"
    shutil.copytree(data["target"], copy)
    broken = next(copy.glob("class_0/*.png"))
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)        # a PNG header and nothing decodable
    # Two workers: the error comes back from a DataLoader worker process, traceback and all, as one line.
    args = ["train", str(copy), "--epochs", "1", "--image-size", "32", "--batch-size", "64", "--workers", "2",
            "--tracking-uri", cloud.uri]
    failed = CliRunner().invoke(main, args)
    assert failed.exit_code == 2, failed.output
    lines = failed.output.strip().splitlines()
    assert len(lines) == 1 and broken.name in lines[0] and "--skip-unreadable" in lines[0]
    assert "Traceback" not in failed.output
    skipped = CliRunner().invoke(main, [*args, "--skip-unreadable", "--json"])
    assert skipped.exit_code == 0, skipped.output
    assert 0.0 <= json.loads(skipped.stdout)["balanced_accuracy"] <= 1.0


def test_a_torch_and_torchvision_that_cannot_work_together_are_named_before_any_model(cloud, data, monkeypatch):
    import builtins

    real = builtins.__import__

    def broken_pair(name, *args, **kwargs):   # what `import timm` raises over a torchvision built for another torch
        if name == "timm":
            raise RuntimeError("operator torchvision::nms does not exist")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken_pair)
    result = CliRunner().invoke(main, ["train", str(data["target"]), "--epochs", "1", "--tracking-uri", cloud.uri])
    assert result.exit_code == 1
    line = result.output.strip()
    assert len(line.splitlines()) == 1 and "torchvision" in line and "cannot work together" in line
    assert torch.__version__ in line
