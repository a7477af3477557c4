"""`tfp rank-models`: candidate architectures scored on the target's own labelled images (transferability)."""
from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from tfp_mlflow.cli import TRACKING_URI, console, main


@main.command("rank-models")
@click.argument("data", type=click.Path())
@click.option("--candidates", default=None,
              help="Comma-separated timm names (default: the cloud's known architectures and the offline ones, "
                   "kept to those whose weights load here).")
@click.option("--score", "scores", multiple=True, default=("logme",), show_default=True,
              help="logme, leep, nce, nleep, hscore, shrinkage-hscore, gbc; repeatable; the first orders the table.")
@click.option("--samples", type=int, default=500, show_default=True, help="Labelled images used (stratified).")
@click.option("--weights", type=click.Path(dir_okay=False), help="Local weights (only with one candidate).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--device", default=None, help="cpu or cuda (default: CUDA when present).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "json_out", is_flag=False, flag_value="-", default=None,
              help="Write the ranking as JSON (to FILE, or stdout with --json alone).")
@TRACKING_URI
def rank_models_command(data: str, candidates: str | None, scores: tuple[str, ...], samples: int,
                        weights: str | None, batch_size: int, device: str | None, seed: int, json_out: str | None,
                        tracking_uri: str | None) -> None:
    """Score candidate models on DATA's labelled images with transferability scores, best first."""
    from rich.progress import Progress

    from tfp_mlflow.cloud import Cloud
    from tfp_mlflow.errors import BadInputError
    from tfp_mlflow.extract.probe import probe_model
    from tfp_mlflow.transferability import SCORES, score
    from tfp_mlflow.tune import loadable_architectures
    from tfp_mlflow.tune.study import cloud_architectures

    unknown = [s for s in scores if s not in SCORES]
    if unknown:
        raise BadInputError(f"unknown score {unknown[0]!r}; choose from {', '.join(SCORES)}")
    cloud = Cloud(tracking_uri)
    if candidates:
        names = [c.strip() for c in candidates.split(",") if c.strip()]
    else:
        known = cloud_architectures(cloud)
        names, left_out = loadable_architectures([f"tf_efficientnet_lite{i}" for i in range(3)] + known)
        if left_out:
            console.print(f"left out {len(left_out)} architectures whose weights cannot be loaded here: "
                          f"{', '.join(left_out[:6])}")
    if weights and len(names) != 1:
        raise BadInputError("--weights belongs to one architecture; give exactly one --candidates with it")
    rows = []
    with Progress(console=console, transient=True, disable=json_out == "-") as bar:
        for name in names:
            job = bar.add_task(name, total=None)
            probe = probe_model(data, name, weights=weights, samples=samples, batch_size=batch_size, device=device,
                                seed=seed, on_batch=lambda n, job=job: bar.advance(job, n))
            row = {"architecture": name, "weights": probe.weights_source, "images": len(probe.labels)}
            for score_name in scores:
                needs_head = SCORES[score_name][1] == "probabilities"
                row[score_name] = (None if needs_head and probe.probabilities is None else
                              score(score_name, probe.labels, features=probe.features, probabilities=probe.probabilities))
            rows.append(row)
            bar.remove_task(job)
    order = scores[0]
    rows.sort(key=lambda r: -float("inf") if r[order] is None else -r[order])
    payload = {"schema": "tfp.model-ranking/1", "data": str(data), "ordered_by": order, "scores": list(scores),
               "samples": samples, "seed": seed, "ranking": rows,
               "note": "transferability scores did not reliably predict fine-tuned performance on medical tasks "
                       "(Chaves et al., MICCAI 2023); weigh them with the cloud's measured evidence"}
    payload["run_id"] = _log(cloud, payload)
    if json_out:
        text = json.dumps(payload, indent=1)
        if json_out == "-":
            click.echo(text)
            return
        Path(json_out).write_text(text)
    table = Table(title=f"candidate models for {Path(data).name}, ordered by {order} ({rows[0]['images']} images)")
    table.add_column("rank", no_wrap=True)
    table.add_column("architecture", no_wrap=True, min_width=max(len(r["architecture"]) for r in rows))
    for column in scores:
        table.add_column(column, overflow="fold", justify="right")
    for rank, row in enumerate(rows, 1):
        table.add_row(str(rank), row["architecture"], *("n/a" if row[s] is None else f"{row[s]:.3g}" for s in scores))
    console.print(table)
    console.print(f"{payload['note']}; logged as run {payload['run_id']} in experiment tfp-model-rankings")


def _log(cloud, payload: dict) -> str:
    from tfp_mlflow.cloud.schema import MODEL_RANKING_EXPERIMENT, Kind, Tag
    from tfp_mlflow.plots import plot_ranking

    with cloud.record(Kind.MODEL_RANKING, {Tag.ORDERED_BY: payload["ordered_by"]},
                      experiment=MODEL_RANKING_EXPERIMENT) as run:
        run.log_params({key: str(payload[key])[:500] for key in ("data", "ordered_by", "samples", "seed")})
        run.log_metrics({f"{name}.{row['architecture']}"[:250]: row[name]
                         for row in payload["ranking"] for name in payload["scores"]})
        run.log_file("model_ranking.json", lambda p: p.write_text(json.dumps({**payload, "run_id": run.run_id},
                                                                             indent=1)))
        order = payload["ordered_by"]
        shown = [r for r in payload["ranking"] if r[order] is not None]
        if shown:
            run.log_file("model_ranking.png", lambda p: plot_ranking(
                [r["architecture"] for r in shown], [r[order] for r in shown], p,
                title=f"{order} on {Path(payload['data']).name}", xlabel=f"{order} (higher is better)"))
    return run.run_id
