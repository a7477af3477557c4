"""`tfp rank-models`: candidate architectures scored on the target's own labelled images (transferability)."""
from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from tfp_mlflow.cli import TRACKING_URI, console, data_source, emit_json, main, print_note


@main.command("rank-models")
@click.argument("data", type=click.Path())
@click.option("--candidates", default=None,
              help="Comma-separated timm names (default: the cloud's known architectures and the offline ones, "
                   "kept to those whose weights load here).")
@click.option("--score", "scores", multiple=True, default=("logme",), show_default=True,
              help="logme, leep, nce, nleep, hscore, shrinkage-hscore, gbc, cc-fv; repeatable; the first orders the "
                   "table.")
@click.option("--samples", type=int, default=500, show_default=True, help="Labelled images used (stratified).")
@click.option("--weights", type=click.Path(dir_okay=False), help="Local weights (only with one candidate).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--device", default=None, help="cpu or cuda (default: CUDA when present).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "json_out", is_flag=False, flag_value="-", default=None,
              help="Write the ranking as JSON (to FILE, or stdout with --json alone).")
@TRACKING_URI
@data_source
def rank_models_command(data: str, candidates: str | None, scores: tuple[str, ...], samples: int,
                        weights: str | None, batch_size: int, device: str | None, seed: int, json_out: str | None,
                        tracking_uri: str | None) -> None:
    """Score candidate models on DATA's labelled images with transferability scores, best first."""
    from tfp_mlflow.workflows import rank_models

    payload = rank_models(data, tracking_uri, scores=scores, samples=samples, weights=weights, batch_size=batch_size,
                          device=device, seed=seed, progress=json_out != "-",
                          candidates=[c.strip() for c in candidates.split(",") if c.strip()] if candidates else None,
                          on_note=print_note)
    rows, order = payload["ranking"], payload["ordered_by"]
    if emit_json(payload, json_out):
        return
    table = Table(title=f"candidate models for {Path(data).name}, ordered by {order} ({rows[0]['images']} images)")
    table.add_column("rank", no_wrap=True)
    table.add_column("architecture", no_wrap=True, min_width=max(len(r["architecture"]) for r in rows))
    for column in scores:
        table.add_column(column, overflow="fold", justify="right")
    for rank, row in enumerate(rows, 1):
        table.add_row(str(rank), row["architecture"], *("n/a" if row[s] is None else f"{row[s]:.3g}" for s in scores))
    console.print(table)
    console.print(f"{payload['note']}; logged as run {payload['run_id']} in experiment tfp-model-rankings")

