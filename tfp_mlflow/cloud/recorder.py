"""Writing into one run (:class:`RunRecorder`) and a run as readers see it (:class:`StoredRun`).

:meth:`RunLog.record <tfp_mlflow.cloud.runs.RunLog.record>` starts a run and hands out a :class:`RunRecorder`;
leaving the ``with`` block normally writes ``tfp.complete`` (last, after every artifact) and ends the run
``FINISHED``; an exception ends it ``FAILED`` and propagates. Readers therefore never see half a run. Torch-free:
:meth:`RunRecorder.log_model` imports MLflow's pytorch flavour only when a model is logged.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfp_mlflow.cloud.schema import PARAM_LIMIT, Tag, sha256_tag

__all__ = ["RunRecorder", "StoredRun"]


@dataclass(frozen=True)
class StoredRun:
    """A run as readers see it (no MLflow type leaves the cloud package)."""

    run_id: str
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    status: str = ""
    start_time: int = 0
    end_time: int | None = None

    @classmethod
    def from_mlflow(cls, run) -> StoredRun:
        return cls(run_id=run.info.run_id, tags=dict(run.data.tags), params=dict(run.data.params),
                   metrics=dict(run.data.metrics), status=run.info.status, start_time=run.info.start_time or 0,
                   end_time=run.info.end_time)


class RunRecorder:
    """Writes into one open run. Made by :meth:`Cloud.record`; not thread-safe (one writer per run)."""

    def __init__(self, client, uri: str, run_id: str, start_time: int = 0) -> None:
        self._client, self._uri, self.run_id, self.start_time = client, uri, run_id, start_time

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Params as strings, each cut at MLflow's 6,000-character cap."""
        for key, value in params.items():
            self._client.log_param(self.run_id, key, str(value)[:PARAM_LIMIT])

    def log_metrics(self, metrics: Mapping[str, float | None], step: int | None = None) -> None:
        """Metrics; ``None`` values are skipped (a metric that could not be computed is absent, not 0)."""
        for key, value in metrics.items():
            if value is not None:
                self._client.log_metric(self.run_id, key, float(value), step=step)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self._client.set_tag(self.run_id, key, str(value))

    def log_file(self, artifact_path: str, write: Callable[[Path], Any]) -> str:
        """Write a file with ``write(path)`` and log it at ``artifact_path``; returns its SHA-256, which is also
        recorded in the run (tag :func:`~tfp_mlflow.cloud.schema.sha256_tag`) for every reader to check."""
        folder, name = os.path.split(artifact_path)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / name
            write(local)
            digest = hashlib.sha256(local.read_bytes()).hexdigest()
            self._client.log_artifact(self.run_id, str(local), folder or None)
        self._client.set_tag(self.run_id, sha256_tag(artifact_path), digest)
        return digest

    def log_artifact(self, local_path: str | os.PathLike, folder: str | None = None) -> None:
        """An existing file or folder, logged as it is."""
        self._client.log_artifact(self.run_id, str(local_path), folder)

    def log_model(self, model, *, name: str, input_example, pip_requirements: list[str]) -> None:
        """A torch module in MLflow's pytorch flavour, saved with ``torch.export`` (pt2: loading runs no pickle)."""
        import mlflow
        import mlflow.pytorch

        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(self._uri)
        try:
            with mlflow.start_run(run_id=self.run_id), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mlflow.pytorch.log_model(model, name=name, input_example=input_example, serialization_format="pt2",
                                         pip_requirements=pip_requirements)
        finally:
            mlflow.set_tracking_uri(previous)

    @staticmethod
    def flush() -> None:
        """Wait for metrics logged asynchronously (Lightning's MLflow logger) to reach the store."""
        import mlflow

        mlflow.flush_async_logging()

    def finish(self, status: str = "FINISHED", *, complete: bool = True) -> None:
        """End the run: the status, then ``tfp.complete`` (when ``complete`` and FINISHED), the last write: behind
        ``tfp-basic-auth`` a complete run is immutable.

        Only for runs that outlive one ``with`` block (:meth:`Cloud.start_run`); :meth:`Cloud.record` calls it.
        """
        self._client.set_terminated(self.run_id, status)
        if complete and status == "FINISHED":
            self._client.set_tag(self.run_id, Tag.COMPLETE, "1")
