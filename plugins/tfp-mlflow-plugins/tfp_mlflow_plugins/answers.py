"""How the ``/tfp/`` routes answer a failure: the one place where exceptions become responses.

An API route answers ``{"error": "one line"}`` with the exception's status (MLflow's own for its exceptions, a tfp
error's ``http_status``, 401/403 said in words), never a server-side path; a page route renders the same status as
its error page (:func:`answering` with the page's renderer).
"""
from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from tfp_mlflow.errors import CloudError, TfpError

__all__ = ["HTTPFailure", "status_of", "scrub", "json_error", "invalid_request", "answering", "json_errors"]


class HTTPFailure(Exception):
    """A refusal a route raises with its status, one-line message and headers (a 401's challenge, a 503's wait)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def status_of(exc: BaseException) -> tuple[int, str]:
    from mlflow.exceptions import MlflowException

    if isinstance(exc, HTTPFailure):
        return exc.status, exc.message
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, CloudError) and isinstance(cause, MlflowException):
        exc = cause
    if isinstance(exc, MlflowException):
        status, message = exc.get_http_status_code(), exc.message.splitlines()[0][:300]
    elif isinstance(exc, TfpError):
        status, message = exc.http_status, str(exc).strip("'\"")
        if not isinstance(exc, CloudError):
            return status, message
    else:
        raise exc
    if status in (401, 403):
        return status, "your MLflow user may not read the knowledge cloud's experiments; ask an admin for READ"
    return (status if 400 <= status < 600 else 502), message


#: An absolute path of two or more segments that is not part of a URL: a server-side path, never shown to callers.
SERVER_PATH = re.compile(r"(?<![\w:/.\-])/(?:[^\s'\"/]+/)+[^\s'\",)]*")


def scrub(message: str) -> str:
    """The message without server-side paths (cache, temporary and artifact folders)."""
    return SERVER_PATH.sub("<server path>", message)


def json_error(exc: BaseException) -> JSONResponse:
    status, message = status_of(exc)
    return JSONResponse({"error": scrub(message)}, status_code=status, headers=getattr(exc, "headers", None))


async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 ``{"detail": [...]}`` as the documented one-line ``{"error": ...}``."""
    first = exc.errors()[0] if exc.errors() else {}
    where = " ".join(str(part) for part in first.get("loc", ()))
    return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}".strip(": ")[:300]},
                        status_code=422)


def answering(on_error: Callable[[BaseException], Response]):
    """A route that answers any exception with ``on_error(exc)``: the one place where errors become responses."""

    def decorate(route):
        @functools.wraps(route)
        async def answer(*args: Any, **kwargs: Any):
            try:
                return await route(*args, **kwargs)
            except Exception as exc:
                return on_error(exc)

        return answer

    return decorate


def json_errors(route):
    """API routes: a one-line ``{"error": ...}`` with the exception's status."""
    return answering(json_error)(route)
