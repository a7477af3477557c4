"""The ``tfp`` command line: one click group; each command is a thin wrapper over the Python API.

Expected failures (:class:`~tfp_mlflow.errors.TfpError`) print one line and exit with 2 (bad input) or 1;
``tfp --debug ...`` shows the traceback instead.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape

from tfp_mlflow._version import __version__
from tfp_mlflow.cloud.runs import configure_process
from tfp_mlflow.errors import TfpError, one_line

#: Where output is not a terminal (a log file, a pipe, CI), tables get this width instead of rich's 80 columns, so
#: no cell is cut short; COLUMNS sets it. A terminal keeps its own width.
LOG_WIDTH = 160


def _width(stream) -> int | None:
    try:
        if stream.isatty():
            return None
    except (AttributeError, ValueError):
        pass
    return int(os.environ.get("COLUMNS") or LOG_WIDTH)


console = Console(soft_wrap=True, width=_width(sys.stdout))
err_console = Console(stderr=True, width=_width(sys.stderr))


def print_note(line: str) -> None:
    """A workflow's note, on stderr (so ``--json -`` on stdout stays JSON)."""
    err_console.print(f"note: {line}")


#: Packages of the `torch` extra: a command that needs one says how to install it.
_TORCH_EXTRA = {"torch", "torchvision", "timm", "albumentations", "pytorch_lightning", "safetensors", "pydicom"}


def _usage_error(exc: click.UsageError) -> NoReturn:
    """A usage error as one line (not Click's usage, hint and error), exit code 2."""
    where = exc.ctx.command_path if exc.ctx is not None else "tfp"
    err_console.print(f"[bold red]error:[/] {escape(exc.format_message())} (`{escape(where)} --help` lists the "
                      f"options)", highlight=False, soft_wrap=True)
    sys.exit(exc.exit_code)


class _Group(click.Group):
    """Turns TfpError and usage errors into one line on stderr and their exit codes."""

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            _usage_error(exc)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            _usage_error(exc)
        except (TfpError, ModuleNotFoundError) as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            if isinstance(exc, ModuleNotFoundError):
                if (exc.name or "").partition(".")[0] not in _TORCH_EXTRA:
                    raise
                exc = TfpError(f"this command extracts features or trains, which needs {exc.name}: "
                               f"pip install 'tfp-mlflow[torch]' (the recommender itself needs no torch)")
            # Escaped: a message quotes what it was given (a path, a name), which may hold rich's [markup].
            err_console.print(f"[bold red]error:[/] {escape(one_line(exc))}", highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="tfp")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Task fingerprinting on an MLflow knowledge cloud."""
    configure_process()
    ctx.obj = {"debug": debug}


JSON_OUT = click.option("--json", "json_out", is_flag=False, flag_value="-", default=None,
                        help="Write the result as JSON to FILE, or to stdout with --json alone (then no table).")


def emit_json(payload: Any, json_out: str | None, **dumps: Any) -> bool:
    """``--json``: the payload to stdout (returns True: print nothing else) or to a file (returns False)."""

    if not json_out:
        return False
    text = json.dumps(payload, indent=1, **dumps)
    if json_out == "-":
        click.echo(text)
        return True
    Path(json_out).write_text(text)
    return False


def _existing_cloud(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A ``sqlite:///`` cloud whose folder does not exist is a typo far more often than a new cloud: refused,
    unless ``--new-cloud`` asks for one (the default ./tfp-cloud is always made when needed)."""
    if value and value.startswith("sqlite:///") and not ctx.meta.get("tfp.new_cloud"):
        folder = Path(value[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise click.BadParameter(f"no cloud at {value}: the folder {str(folder)!r} does not exist; check the "
                                     f"path, or add --new-cloud to start a new cloud there", param=param)
    return value


def _new_cloud(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    ctx.meta["tfp.new_cloud"] = value


def TRACKING_URI(command: Callable) -> Callable:
    """``--tracking-uri`` (checked: an SQLite cloud's folder must exist) and ``--new-cloud``."""
    command = click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI", callback=_existing_cloud,
                           help="The cloud: sqlite:///PATH or http://HOST:PORT (default: ./tfp-cloud/mlflow.db)."
                           )(command)
    return click.option("--new-cloud", is_flag=True, is_eager=True, expose_value=False, callback=_new_cloud,
                        help="Start a new SQLite cloud at --tracking-uri even where its folder does not exist yet."
                        )(command)


# Commands register themselves on `main` when their module is imported (keep these last).
def data_source(command: Callable) -> Callable:
    """``--data-root``, ``--image-column`` and ``--label-column`` for a command whose DATA may be a library dataset
    (``medmnist:...``, ``hf:...``); put it right above the function."""

    @functools.wraps(command)
    def wrapper(*args: Any, data_root: str | None = None, image_column: str | None = None,
                label_column: str | None = None, **kwargs: Any) -> Any:
        data = kwargs.get("data")
        if data_root and data is not None:
            from tfp_mlflow.extract.sources import is_library_source, resolve_source

            if is_library_source(data):   # read from --data-root once, into the cache every later use reads
                resolve_source(data, data_root=data_root)
        if (image_column or label_column) and data is not None:
            from tfp_mlflow.extract.sources import with_columns

            kwargs["data"] = with_columns(data, image=image_column, label=label_column)
        return command(*args, **kwargs)

    for option in reversed(DATA_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


DATA_ROOT = click.option("--data-root", default=None, help="Where MedMNIST files are read from and downloaded to "
                         "(default: $TFP_DATA_ROOT, else ~/.medmnist).")
DATA_OPTIONS = (DATA_ROOT,
                click.option("--image-column", default=None, help="Image column of a Hugging Face dataset "
                             "(default: its Image feature)."),
                click.option("--label-column", default=None, help="Label column of a Hugging Face dataset "
                             "(default: its ClassLabel, else label/labels)."))


from tfp_mlflow.cli import cloud, demo, evaluate, fingerprints, harvest, models, train, tune  # noqa: E402,F401

