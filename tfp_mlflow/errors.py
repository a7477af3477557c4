"""One exception family for everything tfp-mlflow refuses or cannot do.

The CLI prints ``str(error)`` as a single line (exit code 2 for bad input or usage, 1 for failures), so every
message says what is wrong *and* how to fix it.
"""
from __future__ import annotations

import textwrap

__all__ = ["TfpError", "BadInputError", "SpecMismatchError", "TooLargeError", "NotFoundError", "CloudError",
           "TamperedError", "ArtifactsOnServerError", "first_line", "one_line"]


def first_line(reason: object, limit: int = 160) -> str:
    """The first line of another library's message (an exception or text), at most ``limit`` characters, shortened
    at a word boundary (``...``), never cut mid-word; ``""`` when there is none."""
    lines = str(reason).strip().splitlines()
    return textwrap.shorten(lines[0], width=limit, placeholder=" ...") if lines else ""


def one_line(error: BaseException) -> str:
    """A TfpError's message as the one line it was raised with, also when a DataLoader worker raised it: PyTorch
    re-raises it in the main process with "Caught ... in DataLoader worker process N" and the worker's traceback
    prepended, whose last line is the original ``module.Class: message``."""
    text = str(error)
    if "\n" not in text:
        return text
    name = type(error).__name__
    for line in reversed(text.strip().splitlines()):
        if f"{name}: " in line:
            return line.split(f"{name}: ", 1)[1].strip()
    return text.strip().splitlines()[0]


class TfpError(Exception):
    """Base class: an expected failure with a one-line, actionable message.

    ``exit_code`` is what the CLI exits with; ``http_status`` what the server's REST API answers.
    """

    exit_code = 1
    http_status = 500


class BadInputError(TfpError, ValueError):
    """A file, argument or value given by the user is invalid."""

    exit_code = 2
    http_status = 400


class TooLargeError(BadInputError):
    """An input is larger than tfp accepts (an upload, a declared array)."""

    http_status = 413


class NotFoundError(BadInputError, LookupError):
    """A named thing (a task, a run) is not in the cloud."""

    http_status = 404


class SpecMismatchError(BadInputError):
    """Fingerprints (or a fingerprint and a cloud) were made with different specs and cannot be compared."""


class CloudError(TfpError):
    """The knowledge cloud (an MLflow tracking server) cannot be reached or holds something unexpected.

    ``http_status`` is the server's own answer when it gave one (a 403, a 404), else 502.
    """

    http_status = 502

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        if http_status is not None:
            self.http_status = http_status


class ArtifactsOnServerError(CloudError):
    """An experiment keeps its artifacts behind a tracking server (``mlflow-artifacts:/...``) while this client
    opened the store directly (``sqlite:///...``), where no such artifact can be written or read."""

    http_status = 409


class TamperedError(CloudError):
    """Content a cloud serves is not what its run recorded when it was written (its SHA-256 differs, or it does not
    parse as what tfp wrote). Readers quarantine the run instead of failing the whole query."""

    http_status = 409
