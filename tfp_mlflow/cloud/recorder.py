"""Runs: the only way tfp code outside :mod:`tfp_mlflow.cloud` records anything in MLflow (:class:`RunStore`, the
run half of :class:`~tfp_mlflow.cloud.store.Cloud`) and writes into one run (:class:`RunRecorder`).

:meth:`Cloud.record <tfp_mlflow.cloud.store.Cloud.record>` starts a run and hands out a :class:`RunRecorder`;
leaving the ``with`` block normally writes ``tfp.complete`` (last, after every artifact) and ends the run
``FINISHED``; an exception ends it ``FAILED`` and propagates. Readers therefore never see half a run. Torch-free:
:meth:`RunRecorder.log_model` imports MLflow's pytorch flavour only when a model is logged.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfp_mlflow._version import __version__
from tfp_mlflow.cloud.context import active_cloud
from tfp_mlflow.cloud.records import contributor as current_contributor
from tfp_mlflow.cloud.schema import PARAM_LIMIT, Tag, complete_filter, sha256_tag
from tfp_mlflow.errors import CloudError

__all__ = ["RunRecorder", "RunStore", "StoredRun"]


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


class RunStore:
    """The run half of :class:`~tfp_mlflow.cloud.store.Cloud`: starting, finding and ending runs in its
    experiments (the cloud's own by default). Needs ``client``, ``uri``, ``experiment_id()`` and ``spec_id()``."""

    #: Runs per search page (MLflow's own maximum is 50,000; 1,000 keeps each response small).
    page_size: int = 1000

    def _search(self, filter_string: str, experiment: str | None = None) -> list:
        """All active runs matching the filter, following MLflow's pages (1,000 runs per page)."""
        runs, token = [], None
        experiment_id = self.experiment_id(experiment)
        while True:
            page = self.client.search_runs([experiment_id], filter_string=filter_string, max_results=self.page_size,
                                           page_token=token, order_by=["attributes.start_time DESC"])
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    @contextlib.contextmanager
    def record(self, kind: str, tags: Mapping[str, str], *, experiment: str | None = None,
               parent_run_id: str | None = None, complete: bool = True) -> Iterator[RunRecorder]:
        """Start a run of ``kind`` and yield its :class:`RunRecorder`; the run's life is the ``with`` block.

        On a normal exit ``tfp.complete`` is written last (unless ``complete=False``: runs that no query reads)
        and the run ends FINISHED; on an exception it ends FAILED and the exception propagates. MLflow's
        run-context providers (tfp's own plugin among them) add their tags to ``tags``.
        """
        recorder = self.start_run(kind, tags, experiment=experiment, parent_run_id=parent_run_id)
        try:
            yield recorder
        except BaseException:
            recorder.finish("FAILED")
            raise
        recorder.finish(complete=complete)

    def start_run(self, kind: str, tags: Mapping[str, str], *, experiment: str | None = None,
                  parent_run_id: str | None = None) -> RunRecorder:
        """Start a run that outlives one block (a study's run, which several workers write); end it with
        :meth:`RunRecorder.finish`. Prefer :meth:`record`."""
        tags = dict(tags)
        if parent_run_id:
            tags[Tag.MLFLOW_PARENT_RUN] = parent_run_id
        run = self._start_run(kind, tags, experiment)
        return RunRecorder(self.client, self.uri, run.info.run_id, start_time=run.info.start_time)

    def recorder(self, run_id: str) -> RunRecorder:
        """A recorder for a run that is already open (started by another worker of the same study)."""
        return RunRecorder(self.client, self.uri, run_id)

    def find_runs(self, kind: str, *, experiment: str | None = None, **tags: str) -> list[StoredRun]:
        """Complete runs of ``kind`` with the given ``tfp.`` tags (keys without the prefix), newest first."""
        return [StoredRun.from_mlflow(run) for run in self._search(complete_filter(kind, **tags), experiment)]

    def get_run(self, run_id: str) -> StoredRun:
        return StoredRun.from_mlflow(self.client.get_run(run_id))

    def end_run(self, run_id: str, status: str, tags: Mapping[str, str] = ()) -> None:
        """End a run some other process started (a trial Optuna pruned, a worker that died): tags, then status."""
        for key, value in dict(tags).items():
            self.client.set_tag(run_id, key, value)
        self.client.set_terminated(run_id, status)

    def _start_run(self, kind: str, tags: dict[str, str], experiment: str | None = None):
        from mlflow.tracking.context.registry import resolve_tags

        active_cloud(self.uri, self.spec_id())
        base = {Tag.KIND: kind, Tag.TFP_VERSION: __version__, Tag.MLFLOW_USER: current_contributor()}
        try:
            return self.client.create_run(self.experiment_id(experiment), tags=resolve_tags({**base, **tags}))
        except Exception as exc:
            if getattr(exc, "error_code", "") in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
                said = getattr(exc, "message", "")  # tfp-basic-auth's own reason, when it gave one
                raise CloudError(said if "may not contribute as" in said else
                                 f"MLflow user {current_contributor()!r} may not write to experiment "
                                 f"{experiment or self.experiment} "
                                 f"at {self.uri}; ask an admin for EDIT permission on it") from None
            raise

