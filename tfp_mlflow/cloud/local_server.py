"""A real ``mlflow server`` on 127.0.0.1 in a subprocess, for tests, benchmarks and trying the team set-up locally."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Sequence

from tfp_mlflow.errors import CloudError

__all__ = ["LocalServer", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalServer:
    """``mlflow server`` with a SQLite store and proxied artifacts under ``root``; a context manager.

    ``app_name`` picks an ``mlflow.app`` plugin (``tfp``, ``tfp-basic-auth``); one uvicorn worker keeps memory low.
    """

    def __init__(self, root: str | os.PathLike, *, app_name: str | None = None, env: dict[str, str] | None = None,
                 extra_args: Sequence[str] = (), timeout: float = 180.0) -> None:
        self.root, self.app_name, self.env, self.extra_args = Path(root), app_name, env or {}, list(extra_args)
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> LocalServer:
        self.root.mkdir(parents=True, exist_ok=True)
        port = free_port()
        command = [os.path.join(os.path.dirname(sys.executable), "mlflow"), "server",
                   "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                   "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1",
                   "--port", str(port), "--workers", "1", *self.extra_args]
        if self.app_name:
            command += ["--app-name", self.app_name]
        self.log = open(self.root / "server.log", "w")
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, **self.env}, cwd=self.root)
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
