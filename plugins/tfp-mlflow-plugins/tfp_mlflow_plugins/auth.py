"""``mlflow server --app-name tfp-basic-auth`` (entry point ``mlflow.app: tfp-basic-auth``): MLflow's ``basic-auth``
app with tfp's ``/tfp/`` routes behind the same credentials and permissions, and tfp's own rules on top of MLflow's
permissions (admins are exempt from all three):

* a contribution's contributor is the authenticated user (:func:`_contributor_is_caller`);
* a tfp run (one with ``tfp.kind``) is written only by the account that created it, and once ``tfp.complete`` is
  set nobody changes its tags, params, metrics, inputs or artifacts, ends, deletes or restores it
  (:func:`_owned_and_immutable`, on every route that writes a run: REST API 2.0, ajax-api, the artifact proxy
  and its multipart uploads, log-batch, deletions);
* tfp's experiments (``tfp-*``, and any carrying a ``tfp.`` tag) are created, renamed, deleted, restored or
  re-tagged only by an admin, the cloud's spec and owner included (``tfp cloud init``); a contributor only stamps
  the task list's version (:func:`_experiment_refusal`, :func:`_tfp_experiments_by_admins`).

Every check reads the request as the handler that acts on it will (every spelling of a field, in the body and the
query string); a request that names two runs or experiments is refused, and so is one whose check fails.
"""
from __future__ import annotations

import functools
import json
import posixpath
import re

from fastapi import FastAPI

from tfp_mlflow.cloud.schema import Kind, Tag
from tfp_mlflow_plugins.app import VERIFIED_USER_HEADER, compose
from tfp_mlflow_plugins.credentials import basic_credentials, verified_user

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
    # Ambiguity first, before MLflow's own permission check reads the request its way; ownership after it, when
    # the caller is authenticated.
    flask_app.before_request_funcs.setdefault(None, []).insert(0, _guarded(_one_identity))
    flask_app.before_request(_guarded(_contributor_is_caller))
    flask_app.before_request(_guarded(_owned_and_immutable))
    flask_app.before_request(_guarded(_tfp_experiments_by_admins))
    flask_app.after_request(_creator_is_caller)
    flask_app.after_request(_refusals_as_json)
    app = compose(auth_app, basic_auth=True)
    _guard_artifact_proxy(app)
    return app


#: Tags that name who contributed a run; behind basic auth they must name the caller.
_IDENTITY_TAGS = (Tag.CONTRIBUTOR, Tag.MLFLOW_USER)
_RUN_WRITES = ("/mlflow/runs/create", "/mlflow/runs/set-tag", "/mlflow/runs/log-batch", "/mlflow/runs/delete-tag")
#: What MLflow's client sends as ``user_id`` when the run has no ``mlflow.user`` tag.
_CLIENT_DEFAULT_USER = "unknown"
#: Every spelling MLflow's handlers accept for a field (protobuf's name and its JSON name; ``run_id or run_uuid``).
_RUN_FIELDS = ("run_id", "runId", "run_uuid", "runUuid")
_EXPERIMENT_FIELDS = ("experiment_id", "experimentId")
_USER_FIELDS = ("user_id", "userId")
#: The one experiment tag a contributor (not an admin) may write on a tfp experiment: the task list's version stamp,
#: which every contribution changes (:func:`_experiment_refusal`).
_CONTRIBUTOR_EXPERIMENT_TAGS = (Tag.TASKS_VERSION,)
#: Experiments of these names are tfp's: only an admin creates them (``tfp cloud init``).
_TFP_EXPERIMENT_PREFIX = "tfp-"


class _Refusal(Exception):
    """A request refused before any handler runs: its status and one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _creator_is_caller(response):
    """After ``runs/create``: the new run's ``mlflow.user`` is the authenticated account, whatever the body said,
    so a run's owner (:func:`_ownership_refusal`) is always the account that created it."""
    from flask import request

    if not request.path.endswith("/mlflow/runs/create") or response.status_code != 200:
        return response
    user, _ = _caller()
    if user is None:
        return response

    from mlflow.entities import RunTag

    try:
        run_id = json.loads(response.get_data())["run"]["info"]["run_id"]
        server_store().set_tag(run_id, RunTag(Tag.MLFLOW_USER, user))
    except Exception:   # fail closed: a run whose creator cannot be recorded is not kept
        from flask import jsonify
        failed = jsonify(error_code="INTERNAL_ERROR", error="the run's creator could not be recorded; try again",
                         message="the run's creator could not be recorded; try again")
        failed.status_code = 500
        return failed
    return response


def _refusals_as_json(response):
    """Every refusal of an API call as one JSON line with an ``error`` field, as tfp's own: MLflow's plain-text
    ``Permission denied`` becomes ``{"error_code", "message", "error"}``, and MLflow's JSON errors get ``error``
    beside their ``message``; headers (``WWW-Authenticate``) are kept."""

    from flask import request

    if not 400 <= response.status_code < 500 or not _API_PATH.match(request.path):
        return response
    if response.is_json:
        payload = response.get_json(silent=True)
        if isinstance(payload, dict) and "error" not in payload and isinstance(payload.get("message"), str):
            payload["error"] = payload["message"].strip().splitlines()[0][:300] if payload["message"].strip() else ""
            response.set_data(json.dumps(payload))
        return response
    if response.status_code not in (401, 403):
        return response
    text = response.get_data(as_text=True).strip().splitlines()
    message = (text[0] if text else "refused")[:300]
    code = "UNAUTHENTICATED" if response.status_code == 401 else "PERMISSION_DENIED"
    response.set_data(json.dumps({"error_code": code, "message": message, "error": message}))
    response.mimetype = "application/json"
    return response


def _request_json() -> dict:
    """The JSON body exactly as MLflow's handlers read it (``_get_normalized_request_json``): parsed whatever the
    content type says, a double-encoded string decoded once more, no body as ``{}``."""

    from flask import request

    body = request.get_json(force=True, silent=True)
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            raise _Refusal(400, "the request body is a JSON string that does not hold JSON") from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise _Refusal(400, "the request body must be a JSON object")
    return body


def _one(fields: tuple[str, ...], body: dict, what: str) -> str | None:
    """The single value a request gives for a field under any of its spellings, in the body and the query string;
    a request naming two different values (or a non-string one) is refused."""
    from flask import request

    found = [(f"body {name}", body[name]) for name in fields if name in body]
    found += [(f"query {name}", value) for name in fields for value in request.args.getlist(name)]
    for where, value in found:
        if value is not None and not isinstance(value, str):
            raise _Refusal(400, f"{where} must be a string {what} id")
    values = {value for _, value in found if value}
    if len(values) > 1:
        places = ", ".join(where for where, value in found if value)
        raise _Refusal(400, f"the request names more than one {what} ({places}); name exactly one")
    return values.pop() if values else None


def _refuse(message: str, status: int = 403):
    from flask import jsonify

    response = jsonify(error_code="PERMISSION_DENIED" if status == 403 else "INVALID_PARAMETER_VALUE",
                       message=message, error=message)
    response.status_code = status
    return response


def _guarded(check):
    """A before-request hook that fails closed: a refusal is answered, and so is an error while checking."""

    @functools.wraps(check)
    def hook():
        try:
            return check()
        except _Refusal as refusal:
            return _refuse(refusal.message, refusal.status)
        except Exception as exc:   # fail closed: a check that cannot run refuses
            return _refuse(f"the request could not be checked ({type(exc).__name__}); it was refused", 403)
    return hook


def _one_identity():
    """Refuse, before any permission check or handler runs, a write that names more than one run, experiment or
    creator (any spelling, body and query) or whose body MLflow would read differently from the raw bytes."""
    from flask import request

    writes = _RUN_ROUTE.match(request.path) or request.path.endswith("/mlflow/runs/create") or \
        _EXPERIMENT_ROUTE.match(request.path)
    if writes and not request.headers.get(VERIFIED_USER_HEADER):
        return None   # credentials not verified: MLflow's own check answers 401, and no body is read
    if _RUN_ROUTE.match(request.path) or request.path.endswith("/mlflow/runs/create"):
        body = _request_json()
        _one(_RUN_FIELDS, body, "run")
        _one(_EXPERIMENT_FIELDS, body, "experiment")
        _one(_USER_FIELDS, body, "user")
    elif _UPLOAD_ROUTE.match(request.path):
        _one(_RUN_FIELDS, {}, "run")
    elif _EXPERIMENT_ROUTE.match(request.path):
        _one(_EXPERIMENT_FIELDS, _request_json(), "experiment")
    return None


def _contributor_is_caller():
    """Refuse a run write whose contributor tags or creator name someone other than the authenticated user (admins
    excepted). This is what makes ``--trusted`` mean something: a contribution's contributor is the account that
    wrote it."""
    from flask import request

    if not request.path.endswith(_RUN_WRITES):
        return None
    user, admin = _caller()
    if user is None or admin:
        return None  # MLflow's own check has answered already
    body = _request_json()
    tags = list(body.get("tags") or []) if isinstance(body.get("tags") or [], list) else None
    if tags is None:
        raise _Refusal(400, "tags must be a list of {key, value}")
    if "key" in body:
        tags.append({"key": body.get("key"), "value": body.get("value")})
    claimed = [str(t.get("value")) for t in tags if isinstance(t, dict) and t.get("key") in _IDENTITY_TAGS]
    creator = _one(_USER_FIELDS, body, "user")
    if creator and creator != _CLIENT_DEFAULT_USER:
        claimed.append(creator)
    if request.path.endswith("/runs/delete-tag") and body.get("key") in _IDENTITY_TAGS:
        raise _Refusal(403, f"the tag {body.get('key')!r} names who wrote the run; only an admin may delete it")
    wrong = [c for c in claimed if c != user]
    if wrong:
        raise _Refusal(403, f"user {user!r} may not contribute as {wrong[0]!r}: on this server a contribution's "
                            f"contributor is the authenticated MLflow user")
    return None


_API = r"(?:/[^?]*)?/(?:api|ajax-api)/[23]\.0"
#: Routes that change a run named by ``run_id``/``run_uuid`` (any spelling) in the body or the query.
_RUN_ROUTE = re.compile(_API + r"/mlflow/runs/(?:update|delete|restore|log-metric|log-parameter|set-tag|"
                        r"delete-tag|log-batch|log-model|log-inputs|log-outputs)$")
#: ``upload-artifact`` reads its run from the query string only (its body is the file).
_UPLOAD_ROUTE = re.compile(_API + r"/mlflow/upload-artifact$")
#: Artifact-proxy routes that write: ``<experiment>/<run>/artifacts/...`` follows the prefix.
_ARTIFACT_ROUTE = re.compile(_API + r"/mlflow-artifacts/(?:artifacts|mpu/create|mpu/complete|mpu/abort)/(.*)$")
#: Routes that change an experiment named by ``experiment_id`` (any spelling).
_EXPERIMENT_ROUTE = re.compile(_API + r"/mlflow/experiments/(?:update|delete|restore|set-experiment-tag|"
                               r"delete-experiment-tag)$")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_API_PATH = re.compile(_API + r"/")


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
    """The run a write request targets, read as its handler reads it; ``None`` when it targets none."""
    from flask import request

    if _RUN_ROUTE.match(request.path):
        return _one(_RUN_FIELDS, _request_json(), "run")
    if _UPLOAD_ROUTE.match(request.path):
        return _one(_RUN_FIELDS, {}, "run")
    if request.method in ("POST", "PUT", "DELETE", "PATCH"):
        return _artifact_run_id(request.path)
    return None


def _owned_and_immutable():
    """Refuse a write to a tfp run by anyone but its creator, and any write to a complete one (admins excepted);
    a request naming more than one run, or a run that cannot be checked, is refused."""
    from flask import request

    if _EXPERIMENT_ROUTE.match(request.path):
        return _experiment_refusal()
    run_id = _written_run_id()
    if run_id is None:
        return None
    user, admin = _caller()
    if user is None or admin:
        return None
    reason = _ownership_refusal(user, run_id)
    return _refuse(reason) if reason else None


def server_store():
    """The tracking store this server's own handlers read and write.

    The checks must see a run or experiment exactly as the handler that acts on it will, so they read that store,
    not a client (which would come back through HTTP and these hooks). MLflow offers no public handle on it inside
    the server: ``mlflow.server.handlers._get_tracking_store`` is the one private MLflow name the plugins use, kept
    with tfp's others in :mod:`tfp_mlflow._compat.mlflow` (checked versions, a test per name);
    ``tests/plugins/test_attacks.py`` exercises every caller.
    """
    from tfp_mlflow._compat.mlflow import tracking_store

    return tracking_store()


def _ownership_refusal(user: str, run_id: str) -> str | None:
    """Why ``user`` (not an admin) may not write to run ``run_id``, or ``None`` when it may (fails closed)."""
    try:
        run = server_store().get_run(run_id)
    except Exception:
        return f"run {run_id[:40]!r} cannot be checked (does it exist?); the write was refused"
    tags = run.data.tags
    if Tag.KIND not in tags:
        return None   # not a tfp run: MLflow's permissions alone apply
    owner = tags.get(Tag.MLFLOW_USER) or run.info.user_id
    if owner != user and not _study_member(user, owner, tags):
        return (f"run {run_id} belongs to {owner!r}: on this server only the account that created a tfp run (or "
                f"an admin) may change it")
    if tags.get(Tag.COMPLETE) == "1":
        return (f"run {run_id} is complete: on this server a complete tfp run is immutable (an admin can change "
                f"it); contribute a new version instead")
    return None


def _study_member(user: str, owner: str, tags: dict) -> bool:
    """Whether ``user`` may write a trial run of ``owner``'s: both are the trial's study's owner or workers it
    named (``tfp.workers`` on the study's run, which only its owner writes). Fails closed."""
    if tags.get(Tag.KIND) != Kind.OPTUNA_TRIAL or not tags.get(Tag.MLFLOW_PARENT_RUN):
        return False
    try:
        study = server_store().get_run(tags[Tag.MLFLOW_PARENT_RUN])
    except Exception:
        return False
    study_tags = study.data.tags
    if study_tags.get(Tag.KIND) != Kind.OPTUNA_STUDY:
        return False
    members = {study_tags.get(Tag.MLFLOW_USER) or study.info.user_id,
               *(w for w in study_tags.get(Tag.WORKERS, "").split(",") if w)}
    return user in members and owner in members


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
    credentials = basic_credentials(header)
    user = verified_user(*credentials) if credentials else None
    return (None, False) if user is None else (user.username, bool(user.is_admin))


def _experiment_refusal():
    """A tfp experiment (the cloud's, or any named ``tfp-...``) is renamed, deleted, restored or re-tagged only by an
    admin, its spec and owner included; a contributor may only stamp its task list's version."""
    from flask import request

    user, admin = _caller()
    if user is None or admin:
        return None
    body = _request_json()
    experiment_id = _one(_EXPERIMENT_FIELDS, body, "experiment")
    if experiment_id is None:
        return None   # MLflow answers that the field is missing
    try:
        experiment = server_store().get_experiment(experiment_id)
    except Exception:
        raise _Refusal(403, f"experiment {experiment_id[:40]!r} cannot be checked; the write was refused") from None
    if not (experiment.name.startswith("tfp-") or any(k.startswith("tfp.") for k in experiment.tags)):
        return None   # not tfp's: MLflow's permissions alone apply
    if request.path.endswith("/set-experiment-tag") and body.get("key") in _CONTRIBUTOR_EXPERIMENT_TAGS:
        return None
    return _refuse(f"experiment {experiment.name!r} is the knowledge cloud's: only an admin may rename, delete, "
                   f"restore or re-tag it, its spec and owner included (`tfp cloud init`)")


def _tfp_experiments_by_admins():
    """Only an admin creates an experiment named ``tfp-...``: nobody squats a fresh cloud's studies, tuning or
    recommendations before its owner prepared them (``tfp cloud init``)."""
    from flask import request

    if not request.path.endswith("/mlflow/experiments/create"):
        return None
    user, admin = _caller()
    if user is None or admin:
        return None
    name = _request_json().get("name")
    if isinstance(name, str) and name.strip().lower().startswith(_TFP_EXPERIMENT_PREFIX):
        raise _Refusal(403, f"only an admin creates tfp's experiments ({name[:60]!r}): ask an admin to run "
                            f"`tfp cloud init`")
    return None
