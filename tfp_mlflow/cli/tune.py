"""`tfp tune`: an Optuna study warm-started from the recommender; trials logged as nested MLflow runs."""
from __future__ import annotations

import contextlib

import click
from rich.table import Table

from tfp_mlflow.cli import TRACKING_URI, console, data_source, emit_json, main, print_note
from tfp_mlflow.selectors import DEFAULT_SELECTOR


@main.command("tune")
@click.argument("data", type=click.Path())
@click.option("--study", "study_name", default=None, help="Study name (default: tune-<task>); workers share it.")
@click.option("--storage", default=None, help="Optuna storage URL, or 'mlflow' for the cloud's own store (default: "
                                               "optuna.db beside a SQLite cloud; on a tracking server, the server).")
@click.option("--n-trials", type=int, default=8, show_default=True, help="Finished trials of the whole study.")
@click.option("--space", "space_path", type=click.Path(dir_okay=False), help="Search space YAML/JSON.")
@click.option("--fingerprint", "fingerprint_path", type=click.Path(dir_okay=False, exists=True),
              help="The target's fingerprint for the warm start (default: computed from DATA).")
@click.option("--selector", "selector_name", default=DEFAULT_SELECTOR, show_default=True)
@click.option("--keywords", default="", help="The target's keywords (for --selector manual).")
@click.option("--trusted", default=None, metavar="PATTERNS",
              help="Warm-start only from tasks, knowledge and studies of these contributors (comma-separated fnmatch "
                   "patterns); by default a source's study counts only when its task's own contributor wrote it.")
@click.option("--top-k", type=int, default=3, show_default=True, help="Suggestions enqueued by the warm start.")
@click.option("--no-warm-start", is_flag=True, help="Cold study: the sampler alone (for comparison).")
@click.option("--transfer", type=click.Choice(["top-k", "studies"]), default="studies", show_default=True,
              help="top-k: enqueue the recommended configurations; studies: also learn from the nearest tasks' "
                   "whole studies.")
@click.option("--widen", is_flag=True, help="Grow the space to hold suggestions outside it (else an error).")
@click.option("--image-size", type=int, default=128, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=int, default=0, show_default=True, help="DataLoader workers per trial.")
@click.option("--epochs", type=int, default=None, help="Epochs per trial (default: the space's).")
@click.option("--shrink", type=int, default=None, help="Train each trial on at most n images (the paper: 800).")
@click.option("--device", default=None, help="cpu or cuda (default: CUDA when present).")
@click.option("--name", default=None, help="Target task name (default: the folder or manifest name).")
@click.option("--no-contribute", is_flag=True, help="Do not add the best configuration to the cloud.")
@click.option("--heartbeat", type=int, default=60, show_default=True,
              help="Seconds between a worker's heartbeats; a trial silent for three is failed and retried once.")
@click.option("--worker-accounts", default=None, metavar="ACCOUNTS",
              help="With --storage mlflow: other accounts (comma-separated) whose workers may run this study's trials.")
@click.option("--study-owner", default=None, metavar="ACCOUNT",
              help="With --storage mlflow: join ACCOUNT's study of this name as one of its named worker accounts.")
@click.option("--json", "json_out", is_flag=False, flag_value="-", default=None,
              help="Write the study result as JSON (to FILE, or stdout with --json alone).")
@TRACKING_URI
@data_source
def tune_command(data: str, study_name: str | None, storage: str | None, n_trials: int, space_path: str | None,
                 fingerprint_path: str | None, selector_name: str, keywords: str, trusted: str | None, top_k: int,
                 no_warm_start: bool,
                 transfer: str, widen: bool, image_size: int, batch_size: int, seed: int, workers: int,
                 epochs: int | None,
                 shrink: int | None, device: str | None, name: str | None, no_contribute: bool, heartbeat: int,
                 worker_accounts: str | None, study_owner: str | None, json_out: str | None,
                 tracking_uri: str | None) -> None:
    """Search architecture, policy, learning rate, weight decay and truncation for DATA with Optuna."""
    from tfp_mlflow.recommend import QueryOptions
    from tfp_mlflow.train import TrainConfig
    from tfp_mlflow.tune import StudyPlan
    from tfp_mlflow.workflows import tune_for

    training = TrainConfig(target=data, name=name, image_size=image_size, batch_size=batch_size, seed=seed,
                           workers=workers, shrink=shrink, device=device)
    study = StudyPlan(name=study_name or "", storage=storage or "", n_trials=n_trials, top_k=top_k, widen=widen,
                      seed=seed, contribute=not no_contribute, heartbeat=heartbeat, transfer=transfer,
                      workers=tuple(a for a in (worker_accounts or "").split(",") if a.strip()),
                      owner=study_owner or "")

    def on_trial(trial) -> None:
        if json_out != "-":
            value = "" if trial.value is None else f"{trial.value:.3f}"
            console.print(f"trial {trial.number}: {trial.state.name.lower()} {value} {trial.params}")

    with console.status("tuning", spinner="dots") if json_out != "-" else contextlib.nullcontext():
        result = tune_for(data, tracking_uri, training=training, study=study,
                          query=QueryOptions(selector=selector_name, trusted=trusted), keywords=keywords,
                          space_path=space_path,
                          fingerprint=fingerprint_path, warm_start=not no_warm_start, epochs=epochs,
                          on_trial=on_trial, on_note=print_note)
    if emit_json(result.to_json(), json_out, default=str):
        return
    table = Table(title=f"study {result.study_name} ({len(result.trials)} trials; BA: held-out balanced accuracy)")
    for column in ("#", "state", "BA", "architecture", "policy", "lr", "warm"):
        # Long names fold; the short columns never shrink to nothing on a narrow terminal.
        table.add_column(column, overflow="fold", no_wrap=column not in ("architecture", "policy"))
    for trial in result.trials:
        p = trial["params"]
        table.add_row(str(trial["number"]), trial["state"].lower(),
                      "" if trial["value"] is None else f"{trial['value']:.3f}", str(p.get("architecture", "")),
                      str(p.get("policy", "")), f"{p['lr']:.2g}" if "lr" in p else "",
                      f"rank {trial['user_attrs'].get('rank', '?')}" if trial["user_attrs"].get("warm_start") else "")
    console.print(table)
    if result.joined:
        console.print(f"joined study {result.study_name}: the worker that created it enqueued its warm start")
    elif not no_warm_start:
        console.print(f"warm start: {len(result.warm_started)} recommended configurations enqueued" +
                      ("" if result.warm_started else " (the closest tasks hold no architecture result or policy; "
                       "contribute some, or they come with `tfp import-reference`)"))
    if result.best_value is not None:
        console.print(f"best: {result.best_params} with balanced accuracy {result.best_value:.3f}")
    console.print(f"study run {result.parent_run_id} in experiment tfp-tuning; optuna-dashboard {result.storage}")
