"""What tfp tells MLflow's run-context providers (:mod:`tfp_mlflow_plugins.run_context`): the cloud it works on,
and, inside the server, the caller's credentials. Pure state, no MLflow import, so MLflow can load the providers
while tfp itself is being imported."""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

__all__ = ["active_cloud", "forwarding", "current_cloud", "current_authorization"]

# Set while tfp works on a cloud: (tracking URI, spec id or "").
_ACTIVE: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("tfp_active_cloud", default=None)
# Set while the /tfp/ API serves one request: that caller's Authorization header.
_AUTHORIZATION: contextvars.ContextVar[str | None] = contextvars.ContextVar("tfp_authorization", default=None)


def active_cloud(uri: str, spec_id: str | None) -> None:
    """Mark this context as working on ``uri`` (runs tfp starts then carry its tags)."""
    _ACTIVE.set((uri, spec_id or ""))


def current_cloud() -> tuple[str, str] | None:
    return _ACTIVE.get()


@contextlib.contextmanager
def forwarding(authorization: str | None) -> Iterator[None]:
    """Within the block, MLflow requests from this context carry ``authorization`` (the caller's credentials)."""
    token = _AUTHORIZATION.set(authorization)
    try:
        yield
    finally:
        _AUTHORIZATION.reset(token)


def current_authorization() -> str | None:
    return _AUTHORIZATION.get()
