"""``mlflow server --app-name tfp`` (entry point ``mlflow.app: tfp``): MLflow as usual, plus the knowledge cloud's web
page and REST API under ``/tfp/``. :mod:`.auth` composes the same routes with MLflow's ``basic-auth`` app.

MLflow 3.x (the supported range, ``mlflow>=3.0,<4``) runs uvicorn over a FastAPI app that wraps its Flask app and
calls an ``mlflow.app`` entry point as a factory. Our factories build that same MLflow app (plain, or MLflow's
``basic-auth`` app) and mount it under a small FastAPI app whose own routes are ``/tfp/...``; everything else goes to
MLflow untouched.

The ``/tfp/`` routes read the cloud as a client of this very server, forwarding the caller's credentials (see
:class:`.request_header.ForwardedCredentials`): with authentication on, a user sees exactly what MLflow
lets that user read, and the server's artifact store, backend and cache are used as they are configured.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response

from tfp_mlflow import __version__
from tfp_mlflow.cloud.context import forwarding
from tfp_mlflow.errors import CloudError
from tfp_mlflow_plugins import service
from tfp_mlflow_plugins.answers import (
    HTTPFailure,
    answering,
    invalid_request,
    json_errors,
    scrub,
    status_of,
)
from tfp_mlflow_plugins.credentials import basic_credentials, verified_user
from tfp_mlflow_plugins.readiness import Readiness

__all__ = ["create_app", "compose"]

#: Overrides the address the ``/tfp/`` routes use to reach this server (default: the socket the request came in on).
SELF_URL_ENV = "TFP_SERVER_SELF_URL"


def create_app() -> FastAPI:
    """Entry point ``mlflow.app: tfp``: MLflow's own app with ``/tfp/`` added."""
    from mlflow.server import app as flask_app
    from mlflow.server.fastapi_app import create_fastapi_app

    return compose(create_fastapi_app(flask_app), basic_auth=False)


def compose(mlflow_app: Any, *, basic_auth: bool) -> FastAPI:
    """A FastAPI app serving ``/tfp/`` itself and everything else through ``mlflow_app`` (an ASGI app)."""

    def lifespan(_app: FastAPI):
        # Mounted apps get no lifespan events of their own: run MLflow's (job runners and the like).
        if os.environ.get(SELF_URL_ENV) and not basic_auth:
            _app.state.readiness.start(os.environ[SELF_URL_ENV].rstrip("/"), None, _cloud)
        router = getattr(mlflow_app, "router", None)
        return router.lifespan_context(mlflow_app) if router is not None else _NoLifespan()

    # The OpenAPI description and its docs page are routes of ours, behind the same credentials as the rest.
    app = FastAPI(title="tfp knowledge cloud", version=__version__, lifespan=lifespan,
                  description="Task fingerprinting on this MLflow server: tasks, knowledge and recommendations.",
                  openapi_url=None, docs_url=None, redoc_url=None)
    app.state.basic_auth = basic_auth
    app.state.readiness = Readiness()
    _bounded_bodies(app)
    _prepared_in_background(app)
    app.add_exception_handler(RequestValidationError, invalid_request)  # type: ignore[arg-type]  # starlette's stubs
    app.include_router(_api_router())
    app.include_router(_openapi_router(app))
    app.include_router(_page_router())
    app.mount("/", mlflow_app)
    return app


#: Set by :func:`_bounded_bodies` on an API write whose basic-auth credentials it verified (the account), so the
#: Flask hooks of ``tfp-basic-auth`` read no body of a caller not yet authenticated.
VERIFIED_USER_HEADER = "x-tfp-verified-user"
#: The largest JSON body an MLflow API route takes here (``TFP_MAX_JSON_BODY`` bytes overrides it): far above what
#: MLflow's own limits let a valid request carry (a log-batch of 1,000 metrics, 100 params of 6,000 characters and
#: 100 tags of 8,000 is under 2 MB; a dataset input's schema under 1 MB).
MAX_JSON_BODY = 16 * 1024 * 1024
#: MLflow's API routes whose body is JSON (artifact uploads carry files, and are bounded by the artifact store).
_JSON_ROUTE = re.compile(r"(?:/[^?]*)?/(?:api|ajax-api)/[23]\.0/(?!mlflow-artifacts/)(?!mlflow/upload-artifact)")


def _bounded_bodies(app: FastAPI) -> None:
    """Before anything reads a body: behind basic auth, a write to an API route from a caller whose credentials do
    not verify is answered 401 unread; and a JSON body over :data:`MAX_JSON_BODY`, or of unknown length, is refused
    with one line, the rest never read. So a hostile body costs a header's worth of memory, whoever sends it."""
    limit = int(os.environ.get("TFP_MAX_JSON_BODY", MAX_JSON_BODY))

    @app.middleware("http")
    async def bounded(request: Request, call_next):
        if request.method in ("POST", "PUT", "PATCH", "DELETE") and _JSON_ROUTE.match(request.url.path):
            # Only this middleware says who was verified: a header of that name from the client is dropped.
            headers = [(k, v) for k, v in request.scope["headers"] if k.lower() != VERIFIED_USER_HEADER.encode()]
            if request.app.state.basic_auth:
                try:
                    header = await run_in_threadpool(_authorization, request)
                except HTTPFailure as failure:
                    return JSONResponse({"error_code": "UNAUTHENTICATED", "message": failure.message,
                                         "error": failure.message}, status_code=401, headers=failure.headers)
                verified = basic_credentials(header) if header else None
                if verified is None:      # _authorization verified it: cannot happen, fail closed all the same
                    return JSONResponse({"error": "unauthenticated"}, status_code=401)
                headers.append((VERIFIED_USER_HEADER.encode(), verified[0].encode("latin-1")))
            request.scope["headers"] = headers
            length = request.headers.get("content-length")
            if length is None and request.headers.get("transfer-encoding"):
                message = "send the JSON body with a Content-Length: a body of unknown length is not read here"
                return JSONResponse({"error_code": "INVALID_PARAMETER_VALUE", "message": message, "error": message},
                                    status_code=411)
            if length is not None and (not length.isdigit() or int(length) > limit):
                message = (f"the request body ({length} bytes) is over this server's {limit:,}-byte limit for JSON "
                           f"bodies; send less per request (log-batch takes 1,000 metrics at most)")
                return JSONResponse({"error_code": "INVALID_PARAMETER_VALUE", "message": message, "error": message},
                                    status_code=413)
        return await call_next(request)


def _prepared_in_background(app: FastAPI) -> None:
    """Without accounts, the first request of any kind starts the worker's preparation (:mod:`.readiness`)."""

    @app.middleware("http")
    async def prepare(request: Request, call_next):
        readiness = request.app.state.readiness
        if readiness.state == "cold" and not request.app.state.basic_auth:
            try:
                readiness.start(_self_url(request), None, _cloud)
            except CloudError:
                pass   # no address to reach this server by: the queries prepare what they need
        return await call_next(request)


class _NoLifespan:
    """An empty lifespan, for a mounted app that has none."""

    async def __aenter__(self):
        return None

    async def __aexit__(self, *exc):
        return False


# -- per-request plumbing -----------------------------------------------------------------------------------------

def _authorization(request: Request) -> str | None:
    """The caller's Authorization header, verified against MLflow's user store when basic auth is on."""
    header = request.headers.get("authorization")
    if not request.app.state.basic_auth:
        return header
    challenge = {"WWW-Authenticate": 'Basic realm="mlflow"'}
    if not header or not header.lower().startswith("basic "):
        raise HTTPFailure(401, "this server requires MLflow credentials: log in with your MLflow username and "
                                "password (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD for tfp)", challenge)
    credentials = basic_credentials(header)
    if credentials is None:
        raise HTTPFailure(401, "the Authorization header is not valid basic auth", challenge)
    if verified_user(*credentials) is None:
        raise HTTPFailure(401, f"wrong username or password for {credentials[0]!r}", challenge)
    return header


def _self_url(request: Request) -> str:
    configured = os.environ.get(SELF_URL_ENV)
    if configured:
        return configured.rstrip("/")
    server = request.scope.get("server")
    if not server:
        raise CloudError(f"cannot tell this server's address; set {SELF_URL_ENV}=http://HOST:PORT")
    host, port = server
    host = "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
    return f"{request.scope.get('scheme', 'http')}://{host}:{port}"


@lru_cache(maxsize=8)
def _cloud(url: str):
    from tfp_mlflow.cloud import Cloud

    return Cloud(url)


#: Fingerprint uploads one server worker checks at once, and how many may wait for their turn before a 503.
UPLOADS_PER_WORKER = int(os.environ.get("TFP_UPLOADS_PER_WORKER", "2"))
MAX_WAITING_UPLOADS = 64


class _UploadGate:
    """Uploads one worker checks at once; more wait their turn, and beyond ``MAX_WAITING_UPLOADS`` get a 503."""

    def __init__(self) -> None:
        self.semaphore = asyncio.Semaphore(UPLOADS_PER_WORKER)
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def turn(self):
        if self.waiting >= MAX_WAITING_UPLOADS:
            raise HTTPFailure(503, f"this server is checking {UPLOADS_PER_WORKER} uploads and {self.waiting} "
                                    f"more wait; try again in a few seconds", {"Retry-After": "5"})
        self.waiting += 1
        entered = False
        try:
            async with self.semaphore:
                self.waiting -= 1
                entered = True
                yield
        finally:
            if not entered:   # cancelled while waiting
                self.waiting -= 1


def _upload_gate(app: FastAPI) -> _UploadGate:
    if not hasattr(app.state, "upload_gate"):
        app.state.upload_gate = _UploadGate()
    return app.state.upload_gate


def _may_read(cloud) -> None:
    """Raises unless the caller may read the cloud's experiment (READ): what every ``/tfp/`` route needs. A request
    to the server as the caller (the experiment's id alone is cached per process, whoever asked first)."""
    cloud.spec_id()


async def _serve(request: Request, work: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``work(cloud, *args)`` in a worker thread with the caller's credentials forwarded (after the worker's
    preparation, which the first caller whose credentials verify starts on a server with accounts)."""
    header = _authorization(request)
    url = _self_url(request)
    readiness = request.app.state.readiness
    if readiness.state == "cold":
        readiness.start(url, header, _cloud)
    await readiness.wait()

    def call():
        with forwarding(header):
            return work(_cloud(url), *args, **kwargs)

    return await run_in_threadpool(call)


def _page_errors(route):
    """Page routes: the error page with the exception's status."""
    return answering(lambda exc: _page_error(exc))(route)


# -- REST API ------------------------------------------------------------------------------------------------------

def _api_router() -> APIRouter:
    router = APIRouter(prefix="/tfp/api", tags=["tfp"])

    @router.get("/health", summary="Whether this worker has prepared the cloud for queries (no account needed)")
    async def health(request: Request):
        return request.app.state.readiness.health()

    @router.get("/tasks", summary="Every task with its fields and which knowledge it has; the quarantined runs")
    @json_errors
    async def list_tasks(request: Request):
        tasks = await _serve(request, service.tasks)
        return {"tasks": tasks, "quarantined": await _serve(request, service.quarantined)}

    @router.get("/tasks/{name}", summary="One task: fields, knowledge rows and nearest tasks")
    @json_errors
    async def get_task(request: Request, name: str):
        return await _serve(request, service.task_detail, name)

    @router.get("/tasks/{name}/fingerprint.png", summary="The task's fingerprint heatmap",
                response_class=Response)
    @json_errors
    async def get_fingerprint_png(request: Request, name: str):
        return Response(await _serve(request, service.fingerprint_png, name), media_type="image/png")

    @router.get("/map", summary="2-D knowledge map (classical MDS of a selector's distances)")
    @json_errors
    async def get_map(request: Request, selector: str = service.DEFAULT_SELECTOR):
        return await _serve(request, service.knowledge_map, selector)

    @router.get("/selectors", summary="The registered task selectors")
    @json_errors
    async def get_selectors(request: Request):
        await _serve(request, _may_read)
        return {"selectors": service.selectors()}

    @router.post("/recommend", summary="Recommendations for an uploaded fingerprint (body: the .npz file)",
                 openapi_extra={"requestBody": {"required": False, "content": {
                     "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    @json_errors
    async def post_recommend(request: Request, top_k: int = Query(3, ge=1, le=50),
                             selector: str = service.DEFAULT_SELECTOR,
                             scenario: str = Query("all", description="one scenario, all, or several "
                                                   "(comma-separated)"),
                             metric: str = "balanced_accuracy", keywords: str = "", name: str = "",
                             log: bool = False, trusted: str = "", include_flagged: bool = False,
                             merge: str = Query(service.DEFAULT_MERGE, description="how tasks known only by "
                                                "keywords join a fingerprint ranking; none leaves them out"),
                             order_by: str = Query("auto", description="auto (track record where it validated "
                                                   "better) or distance")):
        _authorization(request)
        async with _upload_gate(request.app).turn():   # checked a few at a time: other routes stay responsive
            body = bytearray()   # up to just past the limit (answering before the body ends breaks clients)
            async for chunk in request.stream():
                body.extend(chunk)
                if len(body) > service.MAX_UPLOAD_BYTES:
                    break
            return await _serve(request, service.recommend_upload, bytes(body), top_k=top_k, selector=selector,
                                scenario=scenario, metric=metric, keywords=keywords, name=name, log=log,
                                trusted=trusted or None, include_flagged=include_flagged, merge=merge,
                                order_by=order_by)

    return router


def _openapi_router(app: FastAPI) -> APIRouter:
    router = APIRouter(prefix="/tfp/api", include_in_schema=False)

    @router.get("/openapi.json")
    @json_errors
    async def openapi(request: Request):
        await _serve(request, _may_read)
        return app.openapi()

    @router.get("/docs")
    @json_errors
    async def docs(request: Request):
        await _serve(request, _may_read)
        return get_swagger_ui_html(openapi_url="/tfp/api/openapi.json", title="tfp knowledge cloud API")

    return router


# -- web page ------------------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _templates():
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(loader=PackageLoader("tfp_mlflow_plugins", "templates"), autoescape=select_autoescape())


def _page(name: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(_templates().get_template(name).render(version=__version__, **context), status_code=status)


def _page_error(exc: BaseException) -> HTMLResponse:
    status, message = status_of(exc)
    response = _page("error.html", status=status, status_code=status, message=scrub(message))
    response.headers.update(getattr(exc, "headers", {}) or {})
    return response


def _page_router() -> APIRouter:
    router = APIRouter(prefix="/tfp", include_in_schema=False)

    @router.get("", response_class=HTMLResponse)
    @router.get("/", response_class=HTMLResponse)
    @_page_errors
    async def index(request: Request):
        tasks = await _serve(request, service.tasks)
        return _page("index.html", tasks=tasks, selectors=service.selectors(), choices=service.query_choices(),
                     quarantined=await _serve(request, service.quarantined))

    @router.get("/tasks/{name}", response_class=HTMLResponse)
    @_page_errors
    async def task_page(request: Request, name: str):
        return _page("task.html", task=await _serve(request, service.task_detail, name))

    return router
