"""``mlflow server --app-name tfp-basic-auth`` (entry point ``mlflow.app: tfp-basic-auth``): MLflow's ``basic-auth``
app with tfp's ``/tfp/`` routes behind the same credentials and permissions, and one rule of tfp's own: a
contribution's contributor is the authenticated user."""
from __future__ import annotations

from fastapi import FastAPI

from tfp_mlflow.cloud.schema import Tag
from tfp_mlflow_plugins.app import compose

__all__ = ["create_basic_auth_app"]


def create_basic_auth_app() -> FastAPI:
    """Entry point ``mlflow.app: tfp-basic-auth``: MLflow's ``basic-auth`` app with ``/tfp/`` added behind the same
    credentials and permissions."""
    try:
        from mlflow.server.auth import create_app as create_auth_app
    except ImportError as exc:
        raise ImportError(f"{exc} (for tfp: pip install 'mlflow[auth]')") from None
    from mlflow.server import app as flask_app

    auth_app = create_auth_app()
    # Registered after MLflow's own check, so the caller is authenticated when this runs.
    flask_app.before_request(_contributor_is_caller)
    return compose(auth_app, basic_auth=True)


#: Tags that name who contributed a run; behind basic auth they must name the caller.
_IDENTITY_TAGS = (Tag.CONTRIBUTOR, "mlflow.user")
_RUN_WRITES = ("/mlflow/runs/create", "/mlflow/runs/set-tag", "/mlflow/runs/log-batch")


def _contributor_is_caller():
    """Refuse a run write whose contributor tags name someone other than the authenticated user (admins excepted).

    This is what makes ``--trusted`` mean something: a contribution's contributor is the account that wrote it.
    """
    from flask import g, jsonify, request

    if request.method != "POST" or not request.path.endswith(_RUN_WRITES):
        return None
    user = getattr(g, "mlflow_authenticated_user", None) or (request.authorization.username
                                                              if request.authorization else None)
    if user is None:
        return None  # MLflow's own check has answered already
    from mlflow.server.auth import store

    body = request.get_json(silent=True) or {}
    tags = list(body.get("tags") or [])
    if "key" in body:
        tags.append({"key": body.get("key"), "value": body.get("value")})
    claimed = [str(t.get("value")) for t in tags if isinstance(t, dict) and t.get("key") in _IDENTITY_TAGS]
    if body.get("user_id"):
        claimed.append(str(body["user_id"]))
    wrong = [c for c in claimed if c != user]
    if wrong and not store.get_user(user).is_admin:
        response = jsonify(error_code="PERMISSION_DENIED",
                           message=f"user {user!r} may not contribute as {wrong[0]!r}: on this server a "
                                   f"contribution's contributor is the authenticated MLflow user")
        response.status_code = 403
        return response
    return None
