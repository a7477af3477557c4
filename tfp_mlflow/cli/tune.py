"""`tfp tune`: an Optuna study warm-started from the recommender; trials logged as nested MLflow runs."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import click
from rich.table import Table

from tfp_mlflow.cli import TRACKING_URI, console, main


@main.command("tune")
@click.argument("data", type=click.Path())
@click.option("--study", "study_name", default=None, help="Study name (default: tune-<task>); workers share it.")
@click.option("--storage", default=None, help="Optuna storage URL (default: sqlite:///tfp-cloud/optuna.db).")
@click.option("--n-trials", type=int, default=8, show_default=True, help="Finished trials of the whole study.")
@click.option("--space", "space_path", type=click.Path(dir_okay=False), help="Search space YAML/JSON.")
@click.option("--fingerprint", "fingerprint_path", type=click.Path(dir_okay=False),
              help="The target's fingerprint for the warm start (default: computed from DATA).")
@click.option("--selector", "selector_name", default="bkld-small-target", show_default=True)
@click.option("--keywords", default="", help="The target's keywords (for --selector manual).")
@click.option("--top-k", type=int, default=3, show_default=True, help="Suggestions enqueued by the warm start.")
@click.option("--no-warm-start", is_flag=True, help="Cold study: the sampler alone (for comparison).")
@click.option("--widen", is_flag=True, help="Grow the space to hold suggestions outside it (else an error).")
@click.option("--image-size", type=int, default=128, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=int, default=0, show_default=True, help="DataLoader workers per trial.")
@click.option("--name", default=None, help="Target task name (default: the folder or manifest name).")
@click.option("--no-contribute", is_flag=True, help="Do not add the best configuration to the cloud.")
@click.option("--heartbeat", type=int, default=60, show_default=True,
              help="Seconds between a worker's heartbeats; a trial silent for three is failed and retried once.")
@click.option("--json", "json_out", is_flag=False, flag_value="-", default=None,
              help="Write the study result as JSON (to FILE, or stdout with --json alone).")
@TRACKING_URI
def tune_command(data: str, study_name: str | None, storage: str | None, n_trials: int, space_path: str | None,
                 fingerprint_path: str | None, selector_name: str, keywords: str, top_k: int, no_warm_start: bool,
                 widen: bool, image_size: int, batch_size: int, seed: int, workers: int, name: str | None,
                 no_contribute: bool, heartbeat: int, json_out: str | None, tracking_uri: str | None) -> None:
    """Search architecture, policy, learning rate, weight decay and truncation for DATA with Optuna."""
    from tfp_mlflow.cloud import Cloud
    from tfp_mlflow.cloud.store import DEFAULT_HOME
    from tfp_mlflow.train import TrainConfig
    from tfp_mlflow.tune import PAPER_ARCHITECTURES, SearchSpace, loadable_architectures, run_study
    from tfp_mlflow.tune.study import cloud_architectures, cloud_policies

    cloud = Cloud(tracking_uri)
    base = TrainConfig(target=data, name=name, image_size=image_size, batch_size=batch_size, seed=seed,
                       workers=workers).validate()
    known = cloud_architectures(cloud)
    loadable, left_out = loadable_architectures(["tf_efficientnet_lite0", *PAPER_ARCHITECTURES, *known])
    space = SearchSpace.load(space_path, default_architectures=loadable, default_policies=sorted(cloud_policies(cloud)))
    if not space_path or "architectures" not in Path(space_path).read_text():
        from dataclasses import replace

        space = replace(space, left_out=tuple(left_out))
    recommendation = None
    if not no_warm_start:
        recommendation = _recommend(cloud, data, fingerprint_path, selector_name, keywords, top_k, base.task_name)
    storage = storage or f"sqlite:///{Path(DEFAULT_HOME) / 'optuna.db'}"
    Path(DEFAULT_HOME).mkdir(parents=True, exist_ok=True)
    if space.left_out:
        console.print(f"left out {len(space.left_out)} architectures whose weights cannot be loaded here: "
                      f"{', '.join(space.left_out[:6])}{' ...' if len(space.left_out) > 6 else ''}")
    with console.status("tuning", spinner="dots") if json_out != "-" else contextlib.nullcontext():
        result = run_study(base, cloud, space, study_name=study_name or f"tune-{base.task_name}", storage=storage,
                           n_trials=n_trials, recommendation=recommendation, top_k=top_k, widen=widen, seed=seed,
                           contribute=not no_contribute, heartbeat=heartbeat,
                           on_trial=lambda t: console.print(f"trial {t.number}: {t.state.name.lower()} "
                                                            f"{'' if t.value is None else f'{t.value:.3f}'} "
                                                            f"{t.params}") if json_out != "-" else None)
    payload = result.to_json()
    if json_out:
        text = json.dumps(payload, indent=1, default=str)
        if json_out == "-":
            click.echo(text)
            return
        Path(json_out).write_text(text)
    table = Table(title=f"study {result.study_name} ({len(result.trials)} trials; BA: held-out balanced accuracy)")
    for column in ("#", "state", "BA", "architecture", "policy", "lr", "warm"):
        # Long names fold; the short columns never shrink to nothing on a narrow terminal.
        table.add_column(column, overflow="fold", no_wrap=column not in ("architecture", "policy"))
    for trial in result.trials:
        p = trial["params"]
        table.add_row(str(trial["number"]), trial["state"].lower(),
                      "" if trial["value"] is None else f"{trial['value']:.3f}", str(p.get("architecture", "")),
                      str(p.get("policy", "")), f"{p['lr']:.2g}" if "lr" in p else "",
                      f"rank {trial['user_attrs']['rank']}" if trial["user_attrs"].get("warm_start") else "")
    console.print(table)
    if result.joined:
        console.print(f"joined study {result.study_name}: the worker that created it enqueued its warm start")
    elif recommendation is not None:
        console.print(f"warm start: {len(result.warm_started)} recommended configurations enqueued" +
                      ("" if result.warm_started else " (the closest tasks hold no architecture result or policy; "
                       "contribute some, or they come with `tfp import-reference`)"))
    if result.best_value is not None:
        console.print(f"best: {result.best_params} with balanced accuracy {result.best_value:.3f}")
    console.print(f"study run {result.parent_run_id} in experiment tfp-tuning; optuna-dashboard {result.storage}")


def _recommend(cloud, data: str, fingerprint_path: str | None, selector: str, keywords: str, top_k: int,
               name: str) -> dict | None:
    from tfp_mlflow.fingerprint import Fingerprint, validate_keywords
    from tfp_mlflow.recommend import recommend

    words = validate_keywords([k for k in keywords.split(",") if k]) if keywords else []
    target = None
    if selector != "manual":
        if fingerprint_path:
            target = Fingerprint.load(fingerprint_path)
        else:
            from tfp_mlflow.extract import fingerprint_dataset

            target = fingerprint_dataset(data, samples=1000, name=name, keywords=words)
    result = recommend(cloud, target, keywords=words, name=name, selector=selector, top_k=top_k,
                       scenarios=("architecture", "augmentation"))
    return result.to_json()
