"""One exception family for everything tfp-mlflow refuses or cannot do.

The CLI prints ``str(error)`` as a single line (exit code 2 for bad input or usage, 1 for failures), so every
message says what is wrong *and* how to fix it.
"""
from __future__ import annotations

__all__ = ["TfpError", "BadInputError", "SpecMismatchError", "CloudError"]


class TfpError(Exception):
    """Base class: an expected failure with a one-line, actionable message."""

    exit_code = 1


class BadInputError(TfpError, ValueError):
    """A file, argument or value given by the user is invalid."""

    exit_code = 2


class SpecMismatchError(BadInputError):
    """Fingerprints (or a fingerprint and a cloud) were made with different specs and cannot be compared."""


class CloudError(TfpError):
    """The knowledge cloud (an MLflow tracking server) cannot be reached or holds something unexpected."""
