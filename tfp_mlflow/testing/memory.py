"""An in-memory run log: a knowledge cloud with nothing behind it, for tests and quick experiments (as Optuna's
``InMemoryStorage``).

:func:`memory_cloud` composes a :class:`~tfp_mlflow.cloud.store.Cloud` over a :class:`MemoryRunLog` instead of
MLflow's tracking API: the catalogue, the knowledge log and the verified artifact reader are the same code, so the
storage contract suite (``tests/cloud/test_contract.py``) runs over it in milliseconds on the quick path, and over
SQLite and real servers beside it. It keeps the run log's contract (:mod:`tfp_mlflow.cloud.runs`): complete last,
FAILED on an exception, params cut at MLflow's cap, newest first. Nothing persists; one process; thread-safe.

    >>> from tfp_mlflow.testing.memory import memory_cloud
    >>> cloud = memory_cloud()
    >>> cloud.tasks()
    []
"""
from __future__ import annotations

import atexit
import hashlib
import itertools
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from tfp_mlflow._version import __version__
from tfp_mlflow.cloud.recorder import StoredRun
from tfp_mlflow.cloud.records import contributor as current_contributor
from tfp_mlflow.cloud.runs import RunLog
from tfp_mlflow.cloud.schema import CLOUD_EXPERIMENT, PARAM_LIMIT, Tag, sha256_tag
from tfp_mlflow.cloud.store import Cloud
from tfp_mlflow.errors import BadInputError, CloudError

__all__ = ["MemoryRecorder", "MemoryRunLog", "memory_cloud"]


@dataclass
class _Run:
    run_id: str
    experiment_id: str
    start_time: int
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    status: str = "RUNNING"
    end_time: int | None = None
    deleted: bool = False
    files: dict[str, bytes] = field(default_factory=dict)

    def stored(self) -> StoredRun:
        return StoredRun(run_id=self.run_id, tags=dict(self.tags), params=dict(self.params),
                         metrics=dict(self.metrics), status=self.status, start_time=self.start_time,
                         end_time=self.end_time)


class MemoryRecorder:
    """Writes into one open in-memory run (the methods of :class:`~tfp_mlflow.cloud.recorder.RunRecorder`)."""

    def __init__(self, log: MemoryRunLog, run_id: str, start_time: int = 0) -> None:
        self._log, self.run_id, self.start_time = log, run_id, start_time

    def _run(self) -> _Run:
        return self._log._get(self.run_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Params as strings, each cut at MLflow's 6,000-character cap."""
        with self._log._lock:
            self._run().params.update({key: str(value)[:PARAM_LIMIT] for key, value in params.items()})

    def log_metrics(self, metrics: Mapping[str, float | None], step: int | None = None) -> None:
        with self._log._lock:
            self._run().metrics.update({k: float(v) for k, v in metrics.items() if v is not None})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        with self._log._lock:
            self._run().tags.update({key: str(value) for key, value in tags.items()})

    def log_file(self, artifact_path: str, write: Callable[[Path], Any]) -> str:
        """Write a file with ``write(path)`` and keep it at ``artifact_path``; its SHA-256 is recorded in the run."""
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / os.path.basename(artifact_path)
            write(local)
            data = local.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        with self._log._lock:
            run = self._run()
            run.files[artifact_path] = data
            run.tags[sha256_tag(artifact_path)] = digest
        return digest

    def log_artifact(self, local_path: str | os.PathLike, folder: str | None = None) -> None:
        """An existing file or folder, kept as it is."""
        local = Path(local_path)
        base = f"{folder}/" if folder else ""
        entries = ([(f"{base}{local.name}", local)] if local.is_file() else
                   [(f"{base}{local.name}/{p.relative_to(local).as_posix()}", p) for p in local.rglob("*")
                    if p.is_file()])
        with self._log._lock:
            self._run().files.update({name: path.read_bytes() for name, path in entries})

    def log_model(self, model, *, name: str, input_example, pip_requirements: list[str]) -> None:
        raise BadInputError("the in-memory cloud keeps no models; log models to an MLflow store "
                            "(sqlite:///PATH or http://HOST:PORT)")

    @staticmethod
    def flush() -> None:
        """Nothing is logged asynchronously here."""

    def finish(self, status: str = "FINISHED", *, complete: bool = True) -> None:
        """End the run: the status, then ``tfp.complete`` (when ``complete`` and FINISHED), the last write."""
        self._log.end_run(self.run_id, status)
        if complete and status == "FINISHED":
            self.set_tags({Tag.COMPLETE: "1"})


class MemoryRunLog:
    """Experiments and runs in this process's memory, with the run log's interface (:class:`~tfp_mlflow.cloud.runs.
    RunLog`)."""

    def __init__(self, experiment: str = CLOUD_EXPERIMENT, name: str | None = None) -> None:
        self.uri = f"memory://{name or uuid.uuid4().hex[:12]}"
        self.experiment = experiment
        self._lock = threading.RLock()
        self._experiments: dict[str, tuple[str, dict[str, str]]] = {}
        self._runs: dict[str, _Run] = {}
        # Strictly increasing start times: "newest first" is well defined even within a millisecond.
        self._clock = itertools.count(int(time.time() * 1000))

    def _get(self, run_id: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            raise CloudError(f"run {run_id!r} is not in {self.uri}", http_status=404)
        return run

    # -- experiments --------------------------------------------------------------------------------------------
    def experiment_id(self, name: str | None = None) -> str:
        with self._lock:
            entry = self._experiments.setdefault(name or self.experiment, (str(len(self._experiments)), {}))
            return entry[0]

    def experiment_tags(self, name: str | None = None) -> dict[str, str]:
        with self._lock:
            self.experiment_id(name)
            return dict(self._experiments[name or self.experiment][1])

    def set_experiment_tag(self, key: str, value: str, *, retries: int = 5) -> None:
        """Set a tag of the cloud's experiment (``retries``: nothing collides in memory)."""
        with self._lock:
            self.experiment_id()
            self._experiments[self.experiment][1][key] = str(value)

    def spec_id(self) -> str | None:
        return self.experiment_tags().get(Tag.SPEC_ID)

    # -- runs ---------------------------------------------------------------------------------------------------
    def find_runs(self, kind: str, *, experiment: str | None = None, max_results: int | None = None,
                  newest: str = "start", ended_after: int | None = None, **tags: str) -> list[StoredRun]:
        """Complete, active runs of ``kind`` with the given ``tfp.`` tags, newest first (by start or end time); with
        ``ended_after``, only those that ended at or after it."""
        wanted = {Tag.KIND: kind, Tag.COMPLETE: "1", **{f"tfp.{key}": str(value) for key, value in tags.items()}}
        experiment_id = self.experiment_id(experiment)
        with self._lock:
            runs = [r for r in self._runs.values() if r.experiment_id == experiment_id and not r.deleted
                    and all(r.tags.get(k) == v for k, v in wanted.items())
                    and (ended_after is None or (r.end_time or 0) >= ended_after)]
            runs.sort(key=lambda r: (r.end_time or 0) if newest == "end" else r.start_time, reverse=True)
            return [r.stored() for r in runs[:max_results]]

    def get_run(self, run_id: str) -> StoredRun:
        with self._lock:
            return self._get(run_id).stored()

    #: A run whose life is a ``with`` block: the run log's own, over this log's :meth:`start_run`.
    record = RunLog.record

    def start_run(self, kind: str, tags: Mapping[str, str], *, experiment: str | None = None,
                  parent_run_id: str | None = None) -> MemoryRecorder:
        base = {Tag.KIND: kind, Tag.TFP_VERSION: __version__, Tag.MLFLOW_USER: current_contributor()}
        if parent_run_id:
            base[Tag.MLFLOW_PARENT_RUN] = parent_run_id
        run = _Run(run_id=uuid.uuid4().hex, experiment_id=self.experiment_id(experiment), start_time=next(self._clock),
                   tags={**base, **{k: str(v) for k, v in tags.items()}})
        with self._lock:
            self._runs[run.run_id] = run
        return MemoryRecorder(self, run.run_id, run.start_time)

    def recorder(self, run_id: str) -> MemoryRecorder:
        return MemoryRecorder(self, run_id, self.get_run(run_id).start_time)

    def end_run(self, run_id: str, status: str, tags: Mapping[str, str] | None = None) -> None:
        with self._lock:
            run = self._get(run_id)
            run.tags.update({k: str(v) for k, v in dict(tags or {}).items()})
            run.status, run.end_time = status, next(self._clock)

    def delete_run(self, run_id: str) -> bool:
        with self._lock:
            self._get(run_id).deleted = True
        return True

    def log_dataset(self, run_id: str, name: str, digest: str, data_uri: str) -> None:
        """Nothing to link: the run's tags already name its data."""

    # -- artifacts ----------------------------------------------------------------------------------------------
    def artifacts(self, run_id: str) -> list[str]:
        with self._lock:
            return sorted(self._get(run_id).files)

    def artifact_size(self, run_id: str, artifact_path: str) -> int | None:
        with self._lock:
            data = self._get(run_id).files.get(artifact_path)
        return None if data is None else len(data)

    def download(self, run_id: str, artifact_path: str, folder: Path) -> Path:
        with self._lock:
            data = self._get(run_id).files.get(artifact_path)
        if data is None:
            raise CloudError(f"run {run_id} has no artifact {artifact_path}", http_status=404)
        target = Path(folder) / os.path.basename(artifact_path)
        target.write_bytes(data)
        return target


def memory_cloud(cache_dir: str | os.PathLike | None = None, *, experiment: str = CLOUD_EXPERIMENT):
    """A :class:`~tfp_mlflow.cloud.store.Cloud` over a new :class:`MemoryRunLog`; its local cache lives in
    ``cache_dir`` (a temporary folder removed at exit when not given)."""
    if cache_dir is None:
        cache_dir = tempfile.mkdtemp(prefix="tfp-memory-cloud-")
        atexit.register(shutil.rmtree, cache_dir, True)
    # MemoryRunLog has every method of RunLog the cloud calls (the contract suite runs over both), not its type.
    return Cloud(runs=cast(RunLog, MemoryRunLog(experiment)), cache_dir=cache_dir, experiment=experiment)
