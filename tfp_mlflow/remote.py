"""Client of a server's ``/tfp/api/``: one upload instead of downloading every fingerprint. Torch-free, stdlib HTTP."""
from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from tfp_mlflow.errors import BadInputError, CloudError

__all__ = ["recommend_on_server", "tasks_on_server"]


def _headers() -> dict[str, str]:
    headers = {"Content-Type": "application/octet-stream", "Accept": "application/json"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    return headers


def tasks_on_server(url: str, *, timeout: float = 120.0) -> list[dict[str, Any]] | None:
    """``GET URL/tfp/api/tasks``: the server's tasks (name, keywords, ``has_fingerprint``, ...), or ``None`` when
    it has no tfp app. Lets a client know, before it draws a single image, whether the server can rank by
    fingerprint at all."""
    _check_url(url)
    request = urllib.request.Request(f"{url.rstrip('/')}/tfp/api/tasks", headers=_headers(), method="GET")
    payload = _answer(url, request, timeout)
    return None if payload is None else list(payload.get("tasks", payload) if isinstance(payload, dict) else payload)


def _check_url(url: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise BadInputError(f"--server needs an http(s) URL of an `mlflow server --app-name tfp`, got {url!r}")


def recommend_on_server(url: str, fingerprint_bytes: bytes, *, timeout: float = 900.0,
                        **params: Any) -> dict[str, Any] | None:
    """``POST URL/tfp/api/recommend``; the recommendation JSON, or ``None`` when the server has no tfp app.

    ``params``: ``top_k``, ``selector``, ``scenario`` (one, ``all`` or comma-separated), ``metric``,
    ``keywords``, ``name``, ``log``, ``trusted``, ``include_flagged``, ``merge`` (a rule or ``none``), ``order_by``.
    A 4xx answer from the tfp app becomes a :class:`BadInputError` with the server's one-line message.
    """
    _check_url(url)
    query = urllib.parse.urlencode({k: (str(v).lower() if isinstance(v, bool) else v)
                                    for k, v in params.items() if v is not None and v != ""})
    request = urllib.request.Request(f"{url.rstrip('/')}/tfp/api/recommend?{query}", data=fingerprint_bytes,
                                     headers=_headers(), method="POST")
    return _answer(url, request, timeout)


def _answer(url: str, request: urllib.request.Request, timeout: float) -> Any:
    """The JSON a tfp route answered; ``None`` for a plain MLflow server; 4xx and 5xx as one-line errors."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            message = json.loads(body).get("error")
        except (ValueError, AttributeError):
            message = None
        if message is None and exc.code in (404, 405):
            return None  # a plain MLflow server: no tfp app
        if exc.code == 401:
            raise CloudError(f"{url} requires credentials: set MLFLOW_TRACKING_USERNAME and "
                             f"MLFLOW_TRACKING_PASSWORD") from None
        if 400 <= exc.code < 500:
            raise BadInputError(f"the server refused the query ({exc.code}): {message or exc.reason}") from None
        raise CloudError(f"the server at {url} failed ({exc.code}): {message or exc.reason}") from None
    except urllib.error.URLError as exc:
        raise CloudError(f"cannot reach the cloud at {url} ({exc.reason}); start the server, or check "
                         f"--tracking-uri (or --server)") from None
