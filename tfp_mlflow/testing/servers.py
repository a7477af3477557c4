"""A real ``mlflow server`` (and, for the team set-up, a real PostgreSQL) on 127.0.0.1 in subprocesses, for tests,
benchmarks and trying the team set-up locally; and the same server app in a thread of this process
(:class:`ThreadServer`), for the quick tests and for measuring what the server's own code runs."""
from __future__ import annotations

import base64
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tfp_mlflow._compat.mlflow import reimport_auth, server_environment
from tfp_mlflow.errors import CloudError
from tfp_mlflow.testing.stores import sqlite_uri

__all__ = ["LocalServer", "ThreadServer", "LocalPostgres", "free_port", "postgres_binaries", "basic_auth", "http_call"]


def basic_auth(root: str | os.PathLike) -> tuple[dict[str, str], tuple[str, str]]:
    """MLflow basic-auth for a :class:`LocalServer` under ``root``: its environment and the admin's credentials.

    Nobody but the admin has any permission until granted one (``default_permission = NO_PERMISSIONS``); verified
    credentials are cached for a minute (``auth_cache_ttl_seconds``), as ``docs/server.md`` advises.
    """

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    admin = ("admin", secrets.token_urlsafe(16))
    config = root / "basic_auth.ini"
    config.write_text(f"[mlflow]\ndefault_permission = NO_PERMISSIONS\ndatabase_uri = sqlite:///{root / 'auth.db'}\n"
                      f"admin_username = {admin[0]}\nadmin_password = {admin[1]}\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                      "auth_cache_ttl_seconds = 60\n")
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
           "TFP_CACHE_DIR": str(root / "server-cache")}
    return env, admin


def http_call(url: str, *, auth: tuple[str, str] | None = None, data: bytes | None = None,
              method: str | None = None, content_type: str = "application/octet-stream"):
    """``(status, body)`` of a real HTTP request, the body parsed as JSON when the server says it is JSON, strictly:
    ``NaN`` or ``Infinity`` in it raise ``ValueError`` (a server must never emit them)."""

    request = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"),
                                     headers={"Content-Type": content_type})
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, body, kind = response.status, response.read(), response.headers.get("content-type", "")
    except urllib.error.HTTPError as exc:
        status, body, kind = exc.code, exc.read(), exc.headers.get("content-type", "")

    def refuse(name: str):
        raise ValueError(f"the server emitted {name} in JSON")
    return status, (json.loads(body, parse_constant=refuse) if "json" in kind else body)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalServer:
    """``mlflow server`` with a SQLite store and proxied artifacts under ``root``; a context manager.

    ``app_name`` picks an ``mlflow.app`` plugin (``tfp``, ``tfp-basic-auth``); one uvicorn worker keeps memory low
    (``workers`` for more).
    """

    def __init__(self, root: str | os.PathLike, *, app_name: str | None = None, env: dict[str, str] | None = None,
                 extra_args: Sequence[str] = (), backend_store_uri: str | None = None,
                 timeout: float = 180.0, workers: int = 1) -> None:
        self.root, self.app_name, self.env, self.extra_args = Path(root), app_name, env or {}, list(extra_args)
        self.backend_store_uri = backend_store_uri
        self.timeout, self.workers = timeout, workers
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> LocalServer:
        self.root.mkdir(parents=True, exist_ok=True)
        port = free_port()
        command = [os.path.join(os.path.dirname(sys.executable), "mlflow"), "server",
                   "--backend-store-uri", self.backend_store_uri or sqlite_uri(self.root / "mlflow.db"),
                   "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1",
                   "--port", str(port), "--workers", str(self.workers), *self.extra_args]
        if self.app_name:
            command += ["--app-name", self.app_name]
        self.log = open(self.root / "server.log", "w")
        # MLflow's job runner (GenAI jobs; four consumer processes importing MLflow at start) is not used by tfp.
        env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ, **self.env}
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env=env, cwd=self.root)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{self.url}/health", timeout=2).status == 200:
                    return self
            except OSError:
                time.sleep(0.5)
            if self.proc.poll() is not None:
                break
        self.stop()
        raise CloudError(f"mlflow server did not answer /health in {self.timeout:.0f} s; its log: "
                         f"{(self.root / 'server.log').read_text()[-1500:]!r}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        if getattr(self, "log", None):
            self.log.close()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class ThreadServer:
    """What ``mlflow server --app-name APP`` serves (an ``mlflow.app`` entry point, a SQLite store, proxied artifacts
    under ``root``), run by uvicorn in a thread of this process on 127.0.0.1; a context manager.

    MLflow's server keeps its stores and its Flask app's hooks in module globals, set from the environment on first
    use: a process holds one such server in its life, so a second one with another root or app is refused. Starts in
    about a second where :class:`LocalServer` takes ten; use :class:`LocalServer` for anything about processes
    (restarts, workers, memory). The server's own MLflow client shares this process's environment: while it serves,
    keep ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` unset around requests to its ``/tfp/`` routes
    (they act as the caller, through the forwarded credentials).
    """

    _started: tuple[Path, str] | None = None

    def __init__(self, root: str | os.PathLike, *, app_name: str, env: dict[str, str] | None = None) -> None:
        self.root, self.app_name, self.env = Path(root), app_name, env or {}
        self.url = ""
        self._server: Any = None   # uvicorn.Server, imported on start
        self._thread: threading.Thread | None = None
        self._saved: dict[str, str | None] = {}

    def start(self) -> ThreadServer:
        from importlib.metadata import entry_points

        import uvicorn

        if ThreadServer._started is not None:
            raise CloudError(f"this process already served {ThreadServer._started[1]!r} from "
                             f"{ThreadServer._started[0]}: MLflow's server state is per process; use LocalServer")
        entry = next((e for e in entry_points(group="mlflow.app") if e.name == self.app_name), None)
        if entry is None:
            raise CloudError(f"no mlflow.app plugin named {self.app_name!r} is installed")
        self.root.mkdir(parents=True, exist_ok=True)
        env = {**server_environment(sqlite_uri(self.root / "mlflow.db"), str(self.root / "artifacts")), **self.env}
        self._saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        ThreadServer._started = (self.root, self.app_name)
        try:
            reimport_auth()             # this server's configuration, whatever imported MLflow's auth before
            port = free_port()
            self._server = uvicorn.Server(uvicorn.Config(entry.load()(), host="127.0.0.1", port=port,
                                                         log_level="warning"))
            self._thread = threading.Thread(target=self._server.run, name="tfp-thread-server", daemon=True)
            self._thread.start()
            deadline = time.time() + 60
            while not self._server.started:
                if not self._thread.is_alive() or time.time() > deadline:
                    raise CloudError(f"the {self.app_name!r} app did not start in this process")
                time.sleep(0.05)
        except BaseException:
            self.stop()                 # the environment as it was: later tests' subprocesses inherit it
            raise
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=30)
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def __enter__(self) -> ThreadServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def postgres_binaries() -> Path | None:
    """Folder of PostgreSQL's server programs (``initdb``, ``postgres``, ``pg_ctl``), or ``None``."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


class LocalPostgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1 (trust authentication, user ``tfp``); a context manager.

    PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres`` system user in a folder of
    its own under the system's temporary directory.
    """

    def __init__(self, databases: Sequence[str] = ("mlflow", "optuna"), timeout: float = 60.0) -> None:
        self.databases, self.timeout = tuple(databases), timeout
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.root: Path | None = None

    def _as_owner(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def start(self) -> LocalPostgres:

        binaries = postgres_binaries()
        if binaries is None:
            raise CloudError("PostgreSQL is not installed (apt-get install postgresql)")
        self.root = Path(tempfile.mkdtemp(prefix="tfp-postgres-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        data = self.root / "data"
        subprocess.run([*self._as_owner(), str(binaries / "initdb"), "-D", str(data), "-U", "tfp",
                        "--auth=trust", "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120)
        self.port = free_port()
        self.log = open(self.root / "postgres.log", "w")
        self.proc = subprocess.Popen([*self._as_owner(), str(binaries / "postgres"), "-D", str(data),
                                      "-p", str(self.port), "-k", str(self.root), "-c", "listen_addresses=127.0.0.1",
                                      "-c", "fsync=off", "-c", "max_connections=200"],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if self.proc.poll() is not None:
                raise CloudError(f"PostgreSQL did not start: {(self.root / 'postgres.log').read_text()[-800:]!r}")
            time.sleep(0.2)
        time.sleep(0.5)  # accepting connections before it finishes recovery is possible: give it a moment
        for database in self.databases:
            self.create_database(database)
        return self

    def create_database(self, name: str) -> str:
        """Create an empty database; returns its URI."""
        binaries = postgres_binaries()
        if binaries is None:
            raise CloudError("PostgreSQL is not installed here (apt-get install postgresql)")
        subprocess.run([str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "tfp",
                        name], check=True, capture_output=True, timeout=60)
        return self.uri(name)

    def uri(self, database: str = "mlflow") -> str:
        """SQLAlchemy URI of one of the cluster's databases."""
        return f"postgresql://tfp@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)   # fast shutdown
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        if getattr(self, "log", None):
            self.log.close()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def tree_memory_mb(pid: int, field: str = "VmRSS", combine=sum) -> int:
    """``field`` of ``/proc/PID/status`` (``VmRSS``: resident now; ``VmHWM``: peak) or of ``smaps_rollup``
    (``Pss``: resident with shared pages divided among their sharers, so a sum counts them once) over a process and
    its descendants (a server's workers), combined with ``combine`` (``sum``, or ``max`` for the largest), in MB.
    Linux only."""
    values, stack = [], [pid]
    while stack:
        current = stack.pop()
        try:
            status = Path(f"/proc/{current}/{'smaps_rollup' if field == 'Pss' else 'status'}").read_text()
            values.append(int(next(line.split()[1] for line in status.splitlines() if line.startswith(field))))
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return combine(values) // 1024 if values else 0
