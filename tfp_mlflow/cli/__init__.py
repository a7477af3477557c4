"""The ``tfp`` command line: one click group; each command is a thin wrapper over the Python API.

Expected failures (:class:`~tfp_mlflow.errors.TfpError`) print one line and exit with 2 (bad input) or 1;
``tfp --debug ...`` shows the traceback instead.
"""
from __future__ import annotations

import sys
from typing import Any

import click
from rich.console import Console

from tfp_mlflow._version import __version__
from tfp_mlflow.errors import TfpError

console = Console(soft_wrap=True)
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


TRACKING_URI = click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI",
                            help="The cloud: sqlite:///PATH or http://HOST:PORT (default: ./tfp-cloud/mlflow.db).")



# Commands register themselves on `main` when their module is imported (keep these last).
from tfp_mlflow.cli import fingerprints, cloud, evaluate, train, tune, demo, models  # noqa: E402,F401
