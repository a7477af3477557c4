"""Runs that your own training code logs to any MLflow tracking store: what :func:`tfp_mlflow.log_task` and
:func:`tfp_mlflow.log_result` write into them, and what ``tfp harvest`` reads back (:class:`UserRuns`).

These runs are not the cloud's: they carry no tfp kind and nothing here trusts them. A reader gets each run as a
plain :class:`UserRun` (no MLflow type leaves the cloud package) and checks what it reads itself.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfp_mlflow.errors import BadInputError

__all__ = ["UserRun", "UserRuns", "DatasetRef"]


@dataclass(frozen=True)
class DatasetRef:
    """One MLflow dataset input of a run: its name, its source (as MLflow stores it: JSON) and its context."""

    name: str
    source: str
    context: str = ""


@dataclass(frozen=True)
class UserRun:
    """A run as ``tfp harvest`` reads it."""

    run_id: str
    run_name: str = ""
    status: str = ""
    params: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    inputs: tuple[DatasetRef, ...] = ()


class UserRuns:
    """One tracking store's runs, as your code logs them (``None``: ``MLFLOW_TRACKING_URI``'s)."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        import mlflow

        self.client = mlflow.MlflowClient(tracking_uri)
        self.uri = str(self.client.tracking_uri)

    @staticmethod
    def active(run_id: str | None = None, tracking_uri: str | None = None) -> tuple[UserRuns, str]:
        """The store and run to log into: ``run_id``, or the active run of ``mlflow.start_run()``."""
        import mlflow

        if run_id is None:
            active = mlflow.active_run()
            if active is None:
                raise BadInputError("no active MLflow run: call this inside `with mlflow.start_run():` or give "
                                    "run_id")
            run_id = active.info.run_id
        return UserRuns(tracking_uri), run_id

    # -- writing (into a run of yours) ---------------------------------------------------------------------------
    def log_file(self, run_id: str, path: str | Path, folder: str) -> None:
        self.client.log_artifact(run_id, str(path), folder)

    def log_json(self, run_id: str, content: Any, artifact: str) -> None:
        self.client.log_dict(run_id, content, artifact)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            if value:
                self.client.set_tag(run_id, key, value)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self.client.log_metric(run_id, key, float(value))

    def log_training_input(self, run_id: str, name: str, digest: str, data_uri: str) -> None:
        """The run's training data as an MLflow dataset input (context ``training``): where a harvest finds the
        files again, and the UI's "Datasets used"."""
        from mlflow.data.http_dataset_source import HTTPDatasetSource
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import Dataset, DatasetInput, InputTag

        web = data_uri.startswith(("http://", "https://"))
        record = MetaDataset(source=HTTPDatasetSource(url=data_uri if web else f"tfp://{name}"),  # type: ignore[abstract]
                             name=name, digest=digest[:16]).to_dict()
        if data_uri and not web:
            record["source"] = json.dumps({"url": data_uri})
        self.client.log_inputs(run_id, datasets=[DatasetInput(Dataset(**record),
                                                              tags=[InputTag("mlflow.data.context", "training")])])

    # -- reading -------------------------------------------------------------------------------------------------
    def get(self, run_id: str) -> UserRun:
        return _plain(self.client.get_run(run_id))

    def search(self, experiments: Sequence[str], filter_string: str = "", max_runs: int = 10_000) -> list[UserRun]:
        """The runs of the experiments (names, or ids), newest first, at most ``max_runs``."""
        ids = [self._experiment_id(name) for name in experiments]
        runs: list[UserRun] = []
        token = None
        while len(runs) < max_runs:
            page = self.client.search_runs(ids, filter_string=filter_string,
                                           max_results=min(1000, max_runs - len(runs)), page_token=token)
            runs.extend(_plain(run) for run in page)
            token = page.token
            if not token:
                break
        return runs

    def download(self, run_id: str, artifact: str, folder: str | Path, max_bytes: int) -> Path:
        """One artifact of a run into ``folder``; refused beyond ``max_bytes`` (listed sizes first, then on disk)."""
        parent = str(Path(artifact).parent) if "/" in artifact else None
        listed = {a.path: a.file_size for a in self.client.list_artifacts(run_id, parent)}
        if artifact not in listed:
            raise BadInputError(f"artifact {artifact} is not in run {run_id}")
        if (listed[artifact] or 0) > max_bytes:
            raise BadInputError(f"artifact {artifact} of run {run_id} is larger than {max_bytes:,} bytes")
        path = Path(self.client.download_artifacts(run_id, artifact, str(folder)))
        if path.stat().st_size > max_bytes:
            raise BadInputError(f"artifact {artifact} of run {run_id} is larger than {max_bytes:,} bytes")
        return path

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is None and str(name).isdigit():
            try:
                found = self.client.get_experiment(str(name))
            except Exception:
                found = None
        if found is None:
            raise BadInputError(f"experiment {name!r} is not on {self.uri}; `mlflow experiments search` lists them")
        return found.experiment_id


def _plain(run) -> UserRun:
    inputs = tuple(DatasetRef(d.dataset.name, d.dataset.source,
                              {t.key: t.value for t in d.tags}.get("mlflow.data.context", ""))
                   for d in (getattr(run.inputs, "dataset_inputs", None) or []))
    return UserRun(run.info.run_id, run.info.run_name or "", run.info.status, dict(run.data.params),
                   dict(run.data.metrics), dict(run.data.tags), inputs)
