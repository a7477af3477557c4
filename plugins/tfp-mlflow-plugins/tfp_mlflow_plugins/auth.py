"""``mlflow server --app-name tfp-basic-auth`` (entry point ``mlflow.app: tfp-basic-auth``): MLflow's ``basic-auth``
app with tfp's ``/tfp/`` routes behind the same credentials and permissions, and tfp's own rules on top of MLflow's
permissions (admins are exempt from all three):

* a contribution's contributor is the authenticated user (:func:`_contributor_is_caller`);
* a tfp run (one with ``tfp.kind``) is written only by the account that created it, and once ``tfp.complete`` is
  set nobody changes its tags, params, metrics, inputs or artifacts, ends, deletes or restores it
  (:func:`_owned_and_immutable`, on every route that writes a run: REST API 2.0, ajax-api, the artifact proxy
  and its multipart uploads, log-batch, deletions);
* the cloud's spec (experiment tag ``tfp.spec_id``) is set once.
"""
from __future__ import annotations

import posixpath
import re

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
    flask_app.before_request(_owned_and_immutable)
    app = compose(auth_app, basic_auth=True)
    _guard_artifact_proxy(app)
    return app


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


_API = r"(?:/[^?]*)?/(?:api|ajax-api)/2\.0"
#: Routes that change a run named by ``run_id``/``run_uuid`` in the body or the query.
_RUN_ROUTE = re.compile(_API + r"/mlflow/(?:runs/(?:update|delete|restore|log-metric|log-parameter|set-tag|"
                        r"delete-tag|log-batch|log-model|log-inputs|log-outputs)|upload-artifact)$")
#: Artifact-proxy routes that write: ``<experiment>/<run>/artifacts/...`` follows the prefix.
_ARTIFACT_ROUTE = re.compile(_API + r"/mlflow-artifacts/(?:artifacts|mpu/create|mpu/complete|mpu/abort)/(.*)$")
_SET_EXPERIMENT_TAG = re.compile(_API + r"/mlflow/experiments/(?:set-experiment-tag|delete-experiment-tag)$")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def _refuse(message: str):
    from flask import jsonify

    response = jsonify(error_code="PERMISSION_DENIED", message=message)
    response.status_code = 403
    return response


def _caller() -> tuple[str | None, bool]:
    """The authenticated user and whether it is an admin (``None`` when MLflow's own check answers)."""
    from flask import g, request
    from mlflow.server.auth import store

    user = getattr(g, "mlflow_authenticated_user", None) or (request.authorization.username
                                                              if request.authorization else None)
    if user is None:
        return None, False
    try:
        return user, bool(store.get_user(user).is_admin)
    except Exception:
        return user, False


def _written_run_id() -> str | None:
    """The run a write request targets, or ``None`` when it targets none."""
    from flask import request

    if request.method not in ("POST", "PUT", "DELETE", "PATCH"):
        return None
    if _RUN_ROUTE.match(request.path):
        body = request.get_json(silent=True) if request.is_json else None
        body = body if isinstance(body, dict) else {}
        return str(body.get("run_id") or body.get("run_uuid") or request.args.get("run_id")
                   or request.args.get("run_uuid") or "") or None
    return _artifact_run_id(request.path)


def _owned_and_immutable():
    """Refuse a write to a tfp run by anyone but its creator, and any write to a complete one (admins excepted)."""
    from flask import request

    if _SET_EXPERIMENT_TAG.match(request.path) and request.method == "POST":
        return _spec_is_set_once()
    run_id = _written_run_id()
    if run_id is None:
        return None
    user, admin = _caller()
    if user is None or admin:
        return None
    reason = _ownership_refusal(user, run_id)
    return _refuse(reason) if reason else None


def _ownership_refusal(user: str, run_id: str) -> str | None:
    """Why ``user`` (not an admin) may not write to run ``run_id``, or ``None`` when it may."""
    from mlflow.server.handlers import _get_tracking_store

    try:
        run = _get_tracking_store().get_run(run_id)
    except Exception:
        return None   # no such run: MLflow answers
    tags = run.data.tags
    if Tag.KIND not in tags:
        return None   # not a tfp run: MLflow's permissions alone apply
    owner = tags.get("mlflow.user") or run.info.user_id
    if owner != user:
        return (f"run {run_id} belongs to {owner!r}: on this server only the account that created a tfp run (or "
                f"an admin) may change it")
    if tags.get(Tag.COMPLETE) == "1":
        return (f"run {run_id} is complete: on this server a complete tfp run is immutable (an admin can change "
                f"it); contribute a new version instead")
    return None


def _artifact_run_id(path: str) -> str | None:
    """The run an artifact-proxy path (``<experiment>/<run>/artifacts/...``) writes into, if any."""
    match = _ARTIFACT_ROUTE.match(path)
    if not match:
        return None
    segments = [s for s in posixpath.normpath("/" + match.group(1)).split("/") if s]
    return segments[1] if len(segments) >= 2 and _RUN_ID.match(segments[1]) else None


def _guard_artifact_proxy(app: FastAPI) -> None:
    """The artifact proxy is served by FastAPI routes in MLflow 3, past Flask's hooks: the same ownership rule as
    ASGI middleware on our app, which sees every request first."""
    from fastapi import Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse

    @app.middleware("http")
    async def owned_artifacts(request: Request, call_next):
        if request.method in ("PUT", "POST", "DELETE", "PATCH"):
            run_id = _artifact_run_id(request.url.path)
            if run_id is not None:
                user, admin = await run_in_threadpool(_basic_caller, request.headers.get("authorization"))
                if user is not None and not admin:
                    reason = await run_in_threadpool(_ownership_refusal, user, run_id)
                    if reason:
                        return JSONResponse({"error_code": "PERMISSION_DENIED", "message": reason}, status_code=403)
        return await call_next(request)


def _basic_caller(header: str | None) -> tuple[str | None, bool]:
    """The user a valid basic-auth header names and whether it is an admin; ``(None, False)`` otherwise (MLflow
    then answers 401 itself)."""
    import base64

    from mlflow.server.auth import store

    if not header or not header.lower().startswith("basic "):
        return None, False
    try:
        username, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
        if not store.authenticate_user(username, password):
            return None, False
        return username, bool(store.get_user(username).is_admin)
    except Exception:
        return None, False


def _spec_is_set_once():
    """The experiment tag ``tfp.spec_id`` may be set while absent; changing or deleting it needs an admin."""
    from flask import request

    body = request.get_json(silent=True) if request.is_json else None
    body = body if isinstance(body, dict) else {}
    if body.get("key") != Tag.SPEC_ID:
        return None
    user, admin = _caller()
    if user is None or admin:
        return None
    from mlflow.server.handlers import _get_tracking_store

    try:
        experiment = _get_tracking_store().get_experiment(str(body.get("experiment_id", "")))
    except Exception:
        return None
    current = experiment.tags.get(Tag.SPEC_ID)
    if current is not None and (request.path.endswith("delete-experiment-tag") or body.get("value") != current):
        return _refuse(f"the cloud's spec is {current}; only an admin may change it")
    return None
