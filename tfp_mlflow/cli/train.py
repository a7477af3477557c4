"""`tfp train`: the baseline or one transfer scenario, logged to MLflow, optionally contributed to the cloud."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import click

from tfp_mlflow.cli import TRACKING_URI, console, data_source, emit_json, main
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.scenarios import BASELINE, scenario_names


@main.command("train")
@click.argument("data", type=click.Path())
@click.option("--scenario", type=click.Choice([BASELINE, *scenario_names()]), default=None,
              help="What to transfer (default: baseline; with --from-recommendation it must be named).")
@click.option("--from-recommendation", "recommendation", type=click.Path(dir_okay=False),
              help="A `tfp recommend --json FILE` result to take the scenario's suggestion from.")
@click.option("--rank", type=int, default=1, show_default=True, help="Which suggestion of the recommendation.")
@click.option("--architecture", default=None, help="timm model name (default: tf_efficientnet_lite0).")
@click.option("--weights", type=click.Path(dir_okay=False), help="Local ImageNet weights (safetensors or state dict).")
@click.option("--from-scratch", is_flag=True, help="Random initialisation (no ImageNet weights).")
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False), help="albumentations policy JSON.")
@click.option("--source", default=None, help="Source task in the cloud (shareable) for pretraining/co-training.")
@click.option("--source-data", type=click.Path(), help="Local copy of the source's data (folder or manifest).")
@click.option("--truncate", type=int, default=None, help="TruncatedTL: keep the backbone up to this feature stage.")
@click.option("--epochs", type=int, default=3, show_default=True)
@click.option("--pretrain-epochs", type=int, default=None, help="Epochs on the source (default: --epochs).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--image-size", type=int, default=128, show_default=True, help="Side in pixels (the paper: 224).")
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--weight-decay", type=float, default=1e-4, show_default=True)
@click.option("--find-lr", is_flag=True, help="Lightning's learning-rate finder first (as the paper did).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--shrink", type=int, default=None, help="Subsample the training split to n (the paper: 800).")
@click.option("--workers", type=int, default=None, help="DataLoader workers (default: cores - 1, at most 4).")
@click.option("--skip-unreadable", is_flag=True,
              help="Leave out images that cannot be decoded (each is tried once before training) instead of failing.")
@click.option("--device", default=None, help="cpu or cuda (default: CUDA when present).")
@click.option("--precision", default="32-true", show_default=True,
              help="Lightning's precision: 16-mixed or bf16-mixed on a GPU (bf16-mixed on CPU too).")
@click.option("--devices", default="1", show_default=True, help="Lightning's devices: a count, auto, or 0,1.")
@click.option("--num-nodes", type=int, default=1, show_default=True, help="Machines (Lightning's num_nodes).")
@click.option("--strategy", default="auto", show_default=True, help="Lightning's strategy: auto, ddp, fsdp, ...")
@click.option("--name", default=None, help="Target task name (default: the folder or manifest name).")
@click.option("--contribute", is_flag=True, help="Add the outcome to the cloud as knowledge of the target.")
@click.option("--json", "json_out", is_flag=False, flag_value="-", default=None,
              help="Write the result as JSON (to FILE, or stdout with --json alone).")
@TRACKING_URI
@data_source
def train_command(data: str, scenario: str | None, recommendation: str | None, rank: int, architecture: str | None,
                  weights: str | None, from_scratch: bool, policy_path: str | None, source: str | None,
                  source_data: str | None, truncate: int | None, epochs: int, pretrain_epochs: int | None,
                  batch_size: int, image_size: int, lr: float, weight_decay: float, find_lr: bool, seed: int,
                  shrink: int | None, workers: int | None, skip_unreadable: bool, device: str | None, precision: str,
                  devices: str,
                  num_nodes: int, strategy: str, name: str | None, contribute: bool,
                  json_out: str | None, tracking_uri: str | None) -> None:
    """Train on DATA (a folder of class folders, a CSV manifest, medmnist:... or hf:...) and log the run to MLflow."""
    from tfp_mlflow.cloud import Cloud
    from tfp_mlflow.policies import read_policy
    from tfp_mlflow.train import DEFAULT_ARCHITECTURE, TrainConfig, config_from_recommendation, resolve_source, train

    if recommendation and scenario in (None, BASELINE):
        raise BadInputError(f"--from-recommendation needs --scenario {', '.join(scenario_names())}")
    scenario = scenario or BASELINE
    if scenario == "architecture" and not (architecture or recommendation):
        raise BadInputError("the architecture scenario needs --architecture NAME or --from-recommendation")
    cloud = Cloud(tracking_uri)
    config = TrainConfig(
        target=data, scenario=scenario, name=name, architecture=architecture or DEFAULT_ARCHITECTURE,
        weights=weights, from_scratch=from_scratch, truncate=truncate, epochs=epochs, pretrain_epochs=pretrain_epochs,
        batch_size=batch_size, image_size=image_size, lr=lr, weight_decay=weight_decay, find_lr=find_lr, seed=seed,
        shrink=shrink, device=device, workers=workers if workers is not None else min(4, (os.cpu_count() or 2) - 1),
        precision=precision, devices=devices, num_nodes=num_nodes, strategy=strategy, skip_unreadable=skip_unreadable)
    if recommendation:
        config = config_from_recommendation(recommendation, scenario, rank, config, cloud=cloud)
    if policy_path:
        config = _replace(config, policy=read_policy(policy_path), policy_id=Path(policy_path).stem)
    if source_data:
        config = _replace(config, source=source or Path(source_data).name, source_data=source_data)
    elif source:
        source_name, path = resolve_source(cloud, source)
        config = _replace(config, source=source_name, source_data=path)
    result = train(config, cloud=cloud, contribute=contribute, progress=json_out != "-")
    if not result.run_id:   # a DDP process other than rank zero: rank zero reports
        return
    payload = result.to_json()
    if emit_json(payload, json_out):
        return
    auroc = f"{result.auroc:.3f}" if result.auroc is not None else "n/a"
    console.print(f"{result.task}: {result.scenario}" + (f" from {result.source}" if result.source else "") +
                  f" with {result.architecture}: balanced accuracy {result.balanced_accuracy:.3f}, AUROC {auroc} "
                  f"(best epoch {result.best_epoch}, {result.images_per_second:.0f} img/s)")
    console.print(f"logged as run {result.run_id} in experiment tfp-training of {result.tracking_uri}")
    if result.knowledge_runs:
        console.print(f"contributed {len(result.knowledge_runs)} knowledge entries to {result.task}")


def _replace(config, **changes):

    return replace(config, **changes)
