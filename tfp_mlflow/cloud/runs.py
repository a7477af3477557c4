"""The run log: a cloud's experiments and runs on one MLflow tracking store (:class:`RunLog`, a part of
:class:`~tfp_mlflow.cloud.store.Cloud`), and the process settings a program that owns its process may apply
(:func:`configure_process`).

Contract (the "visibility" and "errors" clauses of :mod:`tfp_mlflow.cloud.base`, for runs):

* :meth:`RunLog.record` is the only way tfp writes a run: artifacts and fields inside the ``with`` block,
  ``tfp.complete`` last on a normal exit, FAILED on an exception. Searches for complete runs therefore never see
  half a run.
* An experiment is created on first use; one that was deleted is restored. Its artifact location is next to a
  SQLite store (``<folder of mlflow.db>/artifacts/<experiment>``), the server's own behind ``http(s)://``.
* A store that cannot be reached raises :class:`~tfp_mlflow.errors.CloudError` in one line; a refusal by the
  server's accounts says which account may not write where.

Torch-free.
"""
from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import secrets
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

from tfp_mlflow._version import __version__
from tfp_mlflow.cloud.context import active_cloud, current_authorization
from tfp_mlflow.cloud.recorder import RunRecorder, StoredRun
from tfp_mlflow.cloud.records import contributor as current_contributor
from tfp_mlflow.cloud.records import dataset_input
from tfp_mlflow.cloud.schema import Tag, complete_filter
from tfp_mlflow.errors import ArtifactsOnServerError, CloudError, first_line

__all__ = ["RunLog", "absolute_uri", "configure_process", "create_sqlite_store", "mlflow_client"]

#: Environment defaults for a process tfp owns (see :func:`configure_process`).
PROCESS_DEFAULTS = {
    # Fail in seconds, not minutes, when a server is down.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # MLflow prints run URLs to stdout for http servers, which would corrupt `tfp recommend --json`.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


def configure_process() -> None:
    """Settings for a process that tfp owns (the ``tfp`` command, ``mlflow run`` recipes, the test suite): MLflow's
    HTTP retries and timeout short enough that a server that is down is reported in seconds, no progress bars or
    run URLs on stdout, and no INFO lines for a new SQLite store's schema. Variables already set are kept.

    A library user's process is left alone: constructing a :class:`~tfp_mlflow.cloud.store.Cloud` changes nothing
    outside it."""
    for key, value in PROCESS_DEFAULTS.items():
        os.environ.setdefault(key, value)
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


def absolute_uri(uri: str) -> str:
    """A SQLite URI with a relative path (``sqlite:///tfp-cloud/mlflow.db``) made absolute against the current
    folder, so that every part, artifact location and subprocess reads the same store; any other URI as it is."""
    database = _sqlite_path(uri)
    if database is None or database.is_absolute() or str(database) == ":memory:":
        return uri
    return f"sqlite:///{database.absolute()}"


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def mlflow_client(uri: str):
    """An ``MlflowClient`` of ``uri``; a SQLite store's folder is created, and its creation (MLflow's schema creation
    and migrations, run when the client is constructed) is serialised across processes.

    Several processes creating one new database's tables at once collide (``table _alembic_tmp_latest_metrics
    already exists``, ``duplicate column name: step``); an exclusive lock on ``<database>.lock`` makes the first
    create the schema while the others wait, then find it.
    """
    from mlflow.tracking import MlflowClient

    database = _sqlite_path(uri)
    if database is None:
        return MlflowClient(tracking_uri=uri)
    database.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:          # Windows: no advisory locks; first writers there should not start at once
        return MlflowClient(tracking_uri=uri)
    with open(database.with_name(database.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)    # the store is created here, under the lock
            return client
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def create_sqlite_store(database: str | os.PathLike) -> str:
    """Create (or migrate) the MLflow SQLite store at ``database`` and return its ``sqlite:///`` URI; the schema
    is MLflow's own at this MLflow's head revision. Its folder is created."""
    uri = f"sqlite:///{Path(database).absolute()}"
    mlflow_client(uri)
    return uri


class RunLog:
    """A cloud's experiments and runs: starting, finding and ending runs in its experiments (the cloud's own by
    default), and downloading their artifacts. The only part of the cloud that talks to MLflow's tracking API; what
    it hands the other parts are :class:`StoredRun` values, never MLflow entities. Its public methods are the run
    log's interface: :class:`tfp_mlflow.testing.memory.MemoryRunLog` is the other implementation (a cloud in
    memory), held to the same methods by the contract suite.

    Parameters
    ----------
    client : MlflowClient or None
        The store's client (:func:`mlflow_client`); ``None``: made at the first call that needs it, so a cloud that
        is only named (a query ranked on its server) never imports MLflow.
    uri : str
        The store's tracking URI.
    experiment : str
        The name of the cloud's own experiment.
    """

    #: Runs per search page (MLflow's own maximum is 50,000; 1,000 keeps each response small).
    page_size: int = 1000

    def __init__(self, client, uri: str, experiment: str) -> None:
        self._client, self.uri, self.experiment = client, uri, experiment
        self._experiment_ids: dict[str, str] = {}

    @property
    def client(self):
        """The store's ``MlflowClient``."""
        if self._client is None:
            self._client = mlflow_client(self.uri)
        return self._client

    # -- experiments --------------------------------------------------------------------------------------------
    def _artifact_location(self, name: str) -> str | None:
        """Where a new experiment keeps its artifacts: beside a SQLite store's database; through a server, beside
        the cloud's own experiment when that one keeps them in a folder (a SQLite cloud a server now serves), so
        that a client opening the store directly and one going through the server both reach them; else where the
        server puts them."""
        database = _sqlite_path(self.uri)
        if database is not None:
            return (database.parent / "artifacts" / name).as_uri()
        if name == self.experiment:
            return None
        own = self.client.get_experiment_by_name(self.experiment)
        location = (own.artifact_location or "") if own is not None else ""
        if location.startswith("file:"):
            return f"{location.rstrip('/').rsplit('/', 1)[0]}/{name}"
        return None

    def _reachable(self, experiment) -> None:
        """Refuse, in one line, an experiment whose artifacts only a tracking server can reach when this client
        opened the store directly."""
        location = experiment.artifact_location or ""
        if location.startswith("mlflow-artifacts:") and not self.uri.startswith(("http://", "https://")):
            raise ArtifactsOnServerError(
                f"experiment {experiment.name!r} keeps its artifacts on a tracking server ({location}), which this "
                f"client cannot reach through {self.uri}; point --tracking-uri / MLFLOW_TRACKING_URI at that server "
                f"(http://HOST:PORT), or start it with `mlflow server --backend-store-uri {self.uri}`")

    def experiment_id(self, name: str | None = None) -> str:
        """Id of the named experiment (default: the cloud's own), created on first use."""
        name = name or self.experiment
        if name in self._experiment_ids:
            return self._experiment_ids[name]
        try:
            experiment_id = self._find_or_create(name)
        except CloudError:
            raise
        except Exception as exc:
            raise CloudError(f"cannot reach the cloud at {self.uri} ({type(exc).__name__}: "
                             f"{first_line(exc)}); start the server or check "
                             f"--tracking-uri / MLFLOW_TRACKING_URI") from None
        self._experiment_ids[name] = experiment_id
        return experiment_id

    def _find_or_create(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            self._reachable(experiment)
            if experiment.lifecycle_stage == "deleted":
                self.client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        try:
            return self.client.create_experiment(name, self._artifact_location(name))
        except Exception as exc:  # created concurrently by another contributor, or refused
            experiment = self.client.get_experiment_by_name(name)
            if experiment is not None:
                return experiment.experiment_id
            if getattr(exc, "error_code", "") in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
                raise CloudError(f"experiment {name} does not exist on {self.uri} and only an admin creates tfp's "
                                 f"experiments there: ask an admin to run `tfp cloud init`") from None
            raise

    def experiment_tags(self, name: str | None = None) -> dict[str, str]:
        """The tags of an experiment (default: the cloud's own)."""
        return dict(self.client.get_experiment(self.experiment_id(name)).tags)

    def set_experiment_tag(self, key: str, value: str, *, retries: int = 5) -> None:
        """Set a tag of the cloud's experiment (SQLite: two writers inserting one tag at once collide; the next try
        updates)."""
        for attempt in range(retries):
            try:
                self.client.set_experiment_tag(self.experiment_id(), key, value)
                return
            except Exception:
                if attempt == retries - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def spec_id(self) -> str | None:
        """The cloud's spec id (its experiment's ``tfp.spec_id`` tag), or ``None`` while no spec is set."""
        return self.experiment_tags().get(Tag.SPEC_ID)

    # -- runs ---------------------------------------------------------------------------------------------------
    def _search(self, filter_string: str, experiment: str | None = None, *, max_results: int | None = None,
                order_by: str = "attributes.start_time DESC") -> list:
        """Active runs matching the filter (MLflow entities, which stay in this module), following MLflow's pages;
        all of them, or the first ``max_results``."""
        runs: list = []       # MLflow's Run entities
        token = None
        experiment_id = self.experiment_id(experiment)
        while True:
            size = self.page_size if max_results is None else min(self.page_size, max_results - len(runs))
            page = self.client.search_runs([experiment_id], filter_string=filter_string, max_results=size,
                                           page_token=token, order_by=[order_by])
            runs.extend(page)
            token = page.token
            if not token or (max_results is not None and len(runs) >= max_results):
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

    def find_runs(self, kind: str, *, experiment: str | None = None, max_results: int | None = None,
                  newest: str = "start", ended_after: int | None = None, **tags: str) -> list[StoredRun]:
        """Complete runs of ``kind`` with the given ``tfp.`` tags (keys without the prefix), newest first by start
        time (``newest="end"``: by end time); all of them, or the first ``max_results``; with ``ended_after`` (ms
        since the epoch) only those that ended at or after it."""
        order = "attributes.end_time DESC" if newest == "end" else "attributes.start_time DESC"
        where = complete_filter(kind, **tags)
        if ended_after is not None:
            where += f" and attributes.end_time >= {int(ended_after)}"
        return [StoredRun.from_mlflow(run) for run in self._search(where, experiment, max_results=max_results,
                                                                   order_by=order)]

    def get_run(self, run_id: str) -> StoredRun:
        return StoredRun.from_mlflow(self.client.get_run(run_id))

    def end_run(self, run_id: str, status: str, tags: Mapping[str, str] | None = None) -> None:
        """End a run some other process started (a trial Optuna pruned, a worker that died): tags, then status."""
        for key, value in dict(tags or {}).items():
            self.client.set_tag(run_id, key, value)
        self.client.set_terminated(run_id, status)

    def delete_run(self, run_id: str) -> bool:
        """Delete a run where the server allows it; ``False`` when its accounts refuse (behind ``tfp-basic-auth`` a
        complete run is immutable)."""
        try:
            self.client.delete_run(run_id)
            return True
        except Exception as exc:
            if getattr(exc, "error_code", "") != "PERMISSION_DENIED":
                raise
            return False

    def log_dataset(self, run_id: str, name: str, digest: str, data_uri: str) -> None:
        """Link a task run to its data as an MLflow dataset input (the UI's "Datasets used")."""
        self.client.log_inputs(run_id, datasets=[dataset_input(name, digest, data_uri)])

    # -- artifacts ----------------------------------------------------------------------------------------------
    def artifacts(self, run_id: str) -> list[str]:
        """The paths of every file a run holds."""
        out: list[str] = []
        folders: list[str | None] = [None]
        while folders:
            for entry in self.client.list_artifacts(run_id, folders.pop()):
                (folders if entry.is_dir else out).append(entry.path)
        return sorted(out)

    def artifact_size(self, run_id: str, artifact_path: str) -> int | None:
        """The stored size of an artifact from its listing, before any download; ``None`` when the store lists no
        size (the size is then checked after the download)."""
        folder = posixpath.dirname(artifact_path) or None
        try:
            listed = {f.path: f.file_size for f in self.client.list_artifacts(run_id, folder)}
        except Exception:
            return None
        return listed.get(artifact_path)

    def download(self, run_id: str, artifact_path: str, folder: Path) -> Path:
        """Download one artifact into ``folder``.

        Inside the server's ``/tfp/`` routes the caller's credentials are forwarded per request, and MLflow
        downloads in a thread pool of its own, which would not carry them; there the file is fetched in this thread
        from the server's ``/get-artifact`` route instead (MLflow checks the caller's READ permission on it).
        """
        authorization = current_authorization()
        if not authorization or not self.uri.startswith(("http://", "https://")):
            return Path(self.client.download_artifacts(run_id, artifact_path, str(folder)))
        query = urllib.parse.urlencode({"run_id": run_id, "path": artifact_path})
        request = urllib.request.Request(f"{self.uri.rstrip('/')}/get-artifact?{query}",
                                         headers={"Authorization": authorization})
        target = Path(folder) / Path(artifact_path).name
        try:
            with urllib.request.urlopen(request, timeout=120) as response, open(target, "wb") as out:
                shutil.copyfileobj(response, out)
        except urllib.error.HTTPError as exc:
            raise CloudError(f"the server answered {exc.code} for {artifact_path} of run {run_id}",
                             http_status=exc.code) from None
        return target

    def _start_run(self, kind: str, tags: dict[str, str], experiment: str | None = None):
        from mlflow.tracking.context.registry import resolve_tags

        active_cloud(self.uri, self.spec_id())
        base = {Tag.KIND: kind, Tag.TFP_VERSION: __version__, Tag.MLFLOW_USER: current_contributor()}
        # `mlflow run` starts each entry point inside a run of its own: the runs it creates name it, and it them.
        project = os.environ.get("MLFLOW_RUN_ID", "")
        if project:
            base[Tag.PROJECT_RUN] = project
        # Named here from os.urandom: MLflow draws its names from Python's `random`, which a seeded training fixes,
        # so every run after a seed got the same name.
        name = f"{kind}-{tags.get(Tag.TASK) or tags.get(Tag.TARGET) or 'tfp'}-{secrets.token_hex(3)}"[:250]
        try:
            run = self.client.create_run(self.experiment_id(experiment), tags=resolve_tags({**base, **tags}),
                                         run_name=name)
        except Exception as exc:
            if getattr(exc, "error_code", "") in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
                said = getattr(exc, "message", "")  # tfp-basic-auth's own reason, when it gave one
                raise CloudError(said if "may not contribute as" in said else
                                 f"MLflow user {current_contributor()!r} may not write to experiment "
                                 f"{experiment or self.experiment} "
                                 f"at {self.uri}; ask an admin for EDIT permission on it") from None
            raise
        if project:
            with contextlib.suppress(Exception):   # the entry point's run may live elsewhere, or be closed
                self.client.set_tag(project, f"{Tag.CREATED_PREFIX}{run.info.run_id}", kind)
        return run
