"""Basic-auth credentials, decoded once and checked against MLflow's user store.

A check goes through MLflow's credential cache when the server enables it (``auth_cache_ttl_seconds`` in the auth
configuration): the password hash (scrypt, about 0.1 s of CPU by design) is then paid once per account and TTL, not
once per request. ``docs/server.md`` says how to turn it on.
"""
from __future__ import annotations

from werkzeug.datastructures import Authorization

__all__ = ["basic_credentials", "verified_user"]


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """``(username, password)`` of a ``Basic`` Authorization header, parsed as Flask parses it for MLflow's own check
    (werkzeug's ``Authorization``); ``None`` when there is none or it is malformed."""
    try:
        parsed = Authorization.from_header(header) if header else None
    except ValueError:   # not ASCII: werkzeug cannot decode it, and MLflow's own check refuses it
        return None
    if parsed is None or parsed.type != "basic" or parsed.username is None:
        return None
    return parsed.username, parsed.password or ""


def verified_user(username: str, password: str):
    """MLflow's ``User`` for valid credentials, else ``None``; never raises for a wrong or unknown account."""
    from mlflow.exceptions import MlflowException
    from mlflow.server import auth

    cached = getattr(auth, "_authenticate_cached", None)   # MLflow >= 3.10: honours auth_cache_ttl_seconds
    if cached is not None:
        return cached(username, password)
    if not auth.store.authenticate_user(username, password):
        return None
    try:
        return auth.store.get_user(username)
    except MlflowException:
        return None
