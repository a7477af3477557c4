"""The ``tfp`` command line: one click group; each command is a thin wrapper over the Python API.

Expected failures (:class:`~tfp_mlflow.errors.TfpError`) print one line and exit with 2 (bad input) or 1;
``tfp --debug ...`` shows the traceback instead.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from tfp_mlflow._version import __version__
from tfp_mlflow.errors import BadInputError, TfpError

console = Console()
err_console = Console(stderr=True)


class _Group(click.Group):
    """Turns TfpError into one line on stderr and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TfpError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="tfp")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Task fingerprinting on an MLflow knowledge cloud."""
    ctx.obj = {"debug": debug}


@main.command("selectors")
def selectors_command() -> None:
    """List the registered task selectors."""
    from tfp_mlflow.selectors import describe_selector, get_selector, list_selectors

    table = Table(title="task selectors (lower distance = closer source)")
    table.add_column("name", style="bold")
    table.add_column("needs")
    table.add_column("description")
    for name in list_selectors():
        needs = "fingerprint" if get_selector(name).needs_fingerprint else "keywords"
        table.add_row(name, needs, describe_selector(name))
    console.print(table)


def _load_tasks(paths: Sequence[str], spec_path: str | None) -> list:
    from tfp_mlflow.fingerprint import Fingerprint
    from tfp_mlflow.spec import FingerprintSpec
    from tfp_mlflow.task import Task

    spec = FingerprintSpec.load(spec_path) if spec_path else None
    tasks = [Task.from_fingerprint(Fingerprint.load(path, spec)) for path in paths]
    names = [task.name for task in tasks]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise BadInputError(f"several fingerprints are named {', '.join(duplicates)}; task names must be unique")
    return tasks


@main.command("distances")
@click.argument("fingerprints", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--selector", "selector_name", default="bkld-small-target", show_default=True,
              help="Selector (see `tfp selectors`).")
@click.option("--target", type=click.Path(dir_okay=False), help="Rank FINGERPRINTS as sources for this target.")
@click.option("--top-k", type=int, default=None, help="Show only the best k sources (with --target).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Write the distance matrix as CSV "
              "(rows sources, columns targets; 0 on the diagonal, as in the reference).")
@click.option("--spec", "spec_path", type=click.Path(dir_okay=False), help="Also check every fingerprint "
              "against this spec file.")
def distances_command(fingerprints: tuple[str, ...], selector_name: str, target: str | None, top_k: int | None,
                      csv_path: str | None, spec_path: str | None) -> None:
    """Distances between fingerprint files, as a ranking (--target) or a matrix."""
    from tfp_mlflow.ranking import rank_sources
    from tfp_mlflow.selectors import get_selector

    selector = get_selector(selector_name)
    sources = _load_tasks(fingerprints, spec_path)
    prepared = selector.prepare(sources)
    targets = _load_tasks([target], spec_path) if target else sources
    matrix = selector.matrix(prepared, targets)
    for j, target_task in enumerate(targets):
        matrix[[i for i, s in enumerate(prepared.names) if s == target_task.name], j] = 0.0
    if csv_path:
        _write_matrix_csv(csv_path, prepared.names, [t.name for t in targets], matrix)
        console.print(f"wrote {matrix.shape[0]} x {matrix.shape[1]} {selector_name} distances to {csv_path}")
    if target:
        ranking = rank_sources(selector, targets[0], prepared, top_k=top_k)
        table = Table(title=f"sources for {targets[0].name} by {selector_name} (lower is closer)")
        for column in ("rank", "source", "distance", "samples"):
            table.add_column(column, justify="left" if column == "source" else "right")
        for entry in ranking:
            table.add_row(str(entry.rank), entry.name, f"{entry.distance:.6g}", f"{entry.num_samples:,}")
        console.print(table)
    elif not csv_path:
        table = Table(title=f"{selector_name} distances (rows sources, columns targets)")
        table.add_column("source")
        for name in prepared.names:
            table.add_column(name, justify="right", overflow="fold")
        for i, name in enumerate(prepared.names):
            table.add_row(name, *(f"{v:.4g}" for v in matrix[i]))
        console.print(table)


def _write_matrix_csv(path: str, sources: Sequence[str], targets: Sequence[str], matrix: np.ndarray) -> None:
    import csv
    import os
    import tempfile

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    with os.fdopen(fd, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", *targets])
        for name, row in zip(sources, matrix):
            writer.writerow([name, *(repr(float(v)) for v in row)])
    os.replace(tmp, out)


@main.command("inspect")
@click.argument("fingerprint", type=click.Path(dir_okay=False))
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Draw the fingerprint to this PNG.")
@click.option("--variant", default=None, help="Variant to draw (default: small).")
def inspect_command(fingerprint: str, plot_path: str | None, variant: str | None) -> None:
    """Summarise a fingerprint file (and draw it)."""
    from tfp_mlflow.fingerprint import Fingerprint

    fp = Fingerprint.load(fingerprint)
    table = Table(title=f"fingerprint {fingerprint}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    means = fp.means
    rows = [("task", fp.name), ("keywords", ", ".join(fp.keywords) or "-"), ("spec", fp.spec_id),
            ("images", f"{fp.num_images:,} in {fp.num_classes} classes"),
            ("class counts", ", ".join(f"{k}: {v}" for k, v in fp.class_counts.items()) or "-"),
            ("draws", f"{fp.num_draws:,} (seed {fp.seed})"),
            ("variants", ", ".join(f"{v} ({fp.counts[v].shape[1]} bins)" for v in fp.variants)),
            ("features", f"{fp.num_features} (means {means.min():.3g} .. {means.max():.3g}, "
                         f"mean {means.mean():.3g})"),
            ("second moments", "yes" if fp.second_moments is not None else "no"),
            ("created", f"{fp.extra.get('created', '?')} by tfp {fp.extra.get('tfp_version', '?')}")]
    for key, value in rows:
        table.add_row(key, str(value))
    console.print(table)
    if plot_path:
        from tfp_mlflow.plots import plot_fingerprint

        plot_fingerprint(fp, plot_path, variant)
        console.print(f"drew {plot_path}")


if __name__ == "__main__":  # pragma: no cover
    main()
