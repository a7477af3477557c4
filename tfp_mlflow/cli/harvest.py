"""``tfp harvest``: the runs a team already logs to MLflow, as knowledge of the cloud."""
from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from tfp_mlflow.cli import JSON_OUT, TRACKING_URI, console, emit_json, main


@main.command("harvest")
@click.argument("experiments", nargs=-1, required=True)
@click.option("--from", "source", default=None, metavar="URI",
              help="The tracking server (or sqlite:///PATH) holding the runs (default: the cloud's own).")
@click.option("--filter", "filter_string", default="", help="An MLflow search filter, e.g. \"params.model != ''\".")
@click.option("--mapping", type=click.Path(dir_okay=False, exists=True), default=None,
              help="JSON or YAML naming where your runs keep architecture, pretrained, cotraining, policy, "
                   "balanced_accuracy, auroc and held_out (default: common names, docs/usage.md).")
@click.option("--contribute", is_flag=True, help="Write what the table lists as new (without it: only the table).")
@click.option("--samples", type=int, default=None,
              help="Draws of a fingerprint made from a run's dataset input (default: as tfp recommend).")
@click.option("--max-runs", type=click.IntRange(1), default=10_000, show_default=True)
@TRACKING_URI
@JSON_OUT
def harvest_command(experiments: tuple[str, ...], source: str | None, filter_string: str, mapping: str | None,
                    contribute: bool, samples: int | None, max_runs: int, tracking_uri: str | None,
                    json_out: str | None) -> None:
    """Turn the finished runs of EXPERIMENTS (names or ids) into knowledge of the cloud: runs that carry a tfp
    fingerprint (tfp_mlflow.log_task, TaskCallback) or a dataset input tfp can read, and a validation metric.

    Prints what each run would become (or, with --contribute, became) and why a run is skipped; a rerun adds
    nothing twice."""
    from tfp_mlflow.cloud import Cloud
    from tfp_mlflow.workflows.harvesting import RunMapping, harvest

    cloud = Cloud(tracking_uri)
    with console.status("reading runs") as status:
        report = harvest(list(experiments), cloud, source=source, filter_string=filter_string,
                         mapping=RunMapping.load(mapping), contribute=contribute, samples=samples, max_runs=max_runs,
                         on_run=lambda run: status.update(f"reading runs: {run.run_name or run.run_id}"))
    if emit_json(report.to_json(), json_out):
        return
    table = Table(title=f"runs of {', '.join(experiments)} on {report.source}")
    for column in ("run", "task", "what it measured", "status"):
        table.add_column(column)
    for run in report.runs:
        said = run.status if run.status != "skipped" else f"skipped: {run.reason}"
        table.add_row(escape(run.run_name or run.run_id[:12]), escape(run.task), escape(run.what), escape(said))
    console.print(table)
    counts = report.counts()
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    console.print(f"{len(report.runs)} runs: {summary}"
                  + ("" if contribute or not counts.get("new") else "; add --contribute to write the new ones"))
