"""A server worker prepares the cloud in the background once it is up (:func:`tfp_mlflow.readiness.warm_up`), and
says whether it is ready on ``GET /tfp/api/health``.

The preparation reads the cloud as a client of this very server, like every ``/tfp/`` route. On ``tfp`` it starts
with the first request of any kind (MLflow's own ``/health`` probe included), or at start-up when
``TFP_SERVER_SELF_URL`` names the server; on ``tfp-basic-auth`` it needs an account, and starts with the first
request whose credentials verify, as that account (what it prepares is keyed by content, and every query still reads
the task list with its own caller's credentials). While it runs, ``/tfp/`` requests wait for it instead of preparing
the same things beside it; a preparation that fails leaves the work to the queries, as before.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from tfp_mlflow.cloud.context import forwarding

__all__ = ["Readiness"]

#: The longest a ``/tfp/`` request waits for the preparation before it goes ahead (and prepares what it needs).
MAX_WAIT_SECONDS = 900.0


class Readiness:
    """One server worker's preparation: ``cold`` (not started), ``preparing``, ``ready`` or ``unprepared`` (it
    failed: queries prepare what they need)."""

    def __init__(self) -> None:
        self.state = "cold"
        self.detail: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()

    def start(self, url: str, header: str | None, cloud_of: Callable[[str], Any]) -> None:
        """Prepare ``cloud_of(url)`` in a thread, with ``header`` forwarded; once per worker."""
        with self._lock:
            if self.state != "cold":
                return
            self.state = "preparing"
        started = time.time()

        def run() -> None:
            from tfp_mlflow.readiness import warm_up

            try:
                with forwarding(header):
                    prepared = warm_up(cloud_of(url))
                self.detail = {"seconds": round(prepared.seconds, 2)}
                self.state = "ready"
            except Exception as exc:   # the queries prepare what they need, as without this
                self.detail = {"seconds": round(time.time() - started, 2), "reason": type(exc).__name__}
                self.state = "unprepared"
            finally:
                self._done.set()

        threading.Thread(target=run, name="tfp-warm-up", daemon=True).start()

    async def wait(self, limit: float = MAX_WAIT_SECONDS) -> None:
        """Until the preparation ends (at most ``limit`` seconds), without holding a worker thread."""
        deadline = time.monotonic() + limit
        while self.state == "preparing" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    def health(self) -> dict[str, Any]:
        """What ``/tfp/api/health`` answers, to anyone (no account needed, so nothing about the cloud): ``ready`` is
        false only while the preparation runs."""
        return {"ready": self.state != "preparing", "state": self.state, **self.detail}
