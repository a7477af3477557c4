"""The knowledge cloud on an MLflow tracking store: :class:`Cloud`, the implementation of
:class:`~tfp_mlflow.cloud.base.KnowledgeStore` (its contract is there), composed of four parts:

=====================  ============================================  =========================================
part                   holds                                         its contract
=====================  ============================================  =========================================
``runs``               experiments and runs (:class:`RunLog`)        :mod:`tfp_mlflow.cloud.runs`
``artifacts``          verified reads, cache, quarantine, snapshots  :mod:`tfp_mlflow.cloud.integrity`
                       (:class:`VerifiedArtifacts`)
``knowledge_log``      knowledge tables and policies                 :mod:`tfp_mlflow.cloud.knowledge_log`
                       (:class:`KnowledgeLog`)
``catalogue``          the spec and the tasks (:class:`Catalogue`)   :mod:`tfp_mlflow.cloud.catalogue`
=====================  ============================================  =========================================

Each part receives the parts below it; ``Cloud`` only composes them and forwards the interface's methods. Every
write goes through :meth:`RunLog.record` (artifacts first, ``tfp.complete`` last), so readers never see half a
contribution. Constructing a ``Cloud`` changes nothing outside it (a program that owns its process calls
:func:`~tfp_mlflow.cloud.runs.configure_process`). Torch-free.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from tfp_mlflow.cloud.cache import LocalCache
from tfp_mlflow.cloud.catalogue import Catalogue
from tfp_mlflow.cloud.integrity import VerifiedArtifacts
from tfp_mlflow.cloud.knowledge import Knowledge
from tfp_mlflow.cloud.knowledge_log import KnowledgeLog
from tfp_mlflow.cloud.recorder import RunRecorder, StoredRun
from tfp_mlflow.cloud.records import CloudTask
from tfp_mlflow.cloud.runs import RunLog, absolute_uri, create_sqlite_store
from tfp_mlflow.cloud.schema import CLOUD_EXPERIMENT, TFP_EXPERIMENTS
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.fingerprint import Fingerprint
from tfp_mlflow.spec import FingerprintSpec, default_spec
from tfp_mlflow.task import Task

if TYPE_CHECKING:   # base.py imports this module's types
    from tfp_mlflow.cloud.base import KnowledgeStore

__all__ = ["Cloud", "CloudTask", "RunRecorder", "StoredRun", "create_sqlite_store", "default_tracking_uri",
           "open_cloud"]

DEFAULT_HOME = "tfp-cloud"


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded default: ``sqlite:///./tfp-cloud/mlflow.db``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    home = Path(DEFAULT_HOME).resolve()
    return f"sqlite:///{home / 'mlflow.db'}"


class Cloud:
    """A knowledge cloud on an MLflow tracking server (``sqlite:///...`` or ``http://host:port``); implements
    :class:`~tfp_mlflow.cloud.base.KnowledgeStore`.

    Parameters
    ----------
    tracking_uri : str, optional
        Defaults to :func:`default_tracking_uri`.
    cache_dir : str, optional
        Local content-addressed cache of downloaded fingerprints and knowledge (default ``~/.cache/tfp-mlflow``).
    experiment : str
        The MLflow experiment that holds the cloud (default ``tfp-cloud``); one server can hold several clouds.
    runs : RunLog, optional
        Another run log in place of MLflow's (``tfp_mlflow.testing.memory.MemoryRunLog``: a cloud in memory);
        ``tracking_uri`` and ``experiment`` are then its own.

    Attributes
    ----------
    runs, artifacts, knowledge_log, catalogue
        The parts (see the module's table).
    client
        The store's ``MlflowClient`` (for MLflow's own API on the same store; tfp's code goes through the parts).
    """

    def __init__(self, tracking_uri: str | None = None, *, cache_dir: str | os.PathLike | None = None,
                 experiment: str = CLOUD_EXPERIMENT, runs: RunLog | None = None) -> None:
        if runs is None:
            uri = absolute_uri(tracking_uri or default_tracking_uri())
            runs = RunLog(None, uri, experiment)     # MLflow's client is made at the first call that needs it
        self.uri, self.experiment = runs.uri, runs.experiment
        self.cache = LocalCache(cache_dir)
        self.runs = runs
        self.artifacts = VerifiedArtifacts(self.runs, self.cache)
        self.knowledge_log = KnowledgeLog(self.runs, self.artifacts)
        self.catalogue = Catalogue(self.runs, self.artifacts, self.knowledge_log)

    @property
    def client(self):
        """The store's ``MlflowClient`` (``None`` for a run log without one)."""
        return getattr(self.runs, "client", None)

    # -- experiments and runs (RunLog) --------------------------------------------------------------------------
    def experiment_id(self, name: str | None = None) -> str:
        """Id of the named experiment (default: the cloud's own), created on first use."""
        return self.runs.experiment_id(name)

    def record(self, kind: str, tags: Mapping[str, str], *, experiment: str | None = None,
               parent_run_id: str | None = None, complete: bool = True) -> AbstractContextManager[RunRecorder]:
        """A run whose life is a ``with`` block (:meth:`RunLog.record`)."""
        return self.runs.record(kind, tags, experiment=experiment, parent_run_id=parent_run_id, complete=complete)

    def start_run(self, kind: str, tags: Mapping[str, str], *, experiment: str | None = None,
                  parent_run_id: str | None = None) -> RunRecorder:
        """A run that outlives one block (:meth:`RunLog.start_run`)."""
        return self.runs.start_run(kind, tags, experiment=experiment, parent_run_id=parent_run_id)

    def recorder(self, run_id: str) -> RunRecorder:
        """A recorder for a run another worker started."""
        return self.runs.recorder(run_id)

    def find_runs(self, kind: str, *, experiment: str | None = None, **tags: str) -> list[StoredRun]:
        """Complete runs of ``kind`` with the given ``tfp.`` tags, newest first."""
        return self.runs.find_runs(kind, experiment=experiment, **tags)  # type: ignore[arg-type]  # tags: str

    def get_run(self, run_id: str) -> StoredRun:
        """One run by id."""
        return self.runs.get_run(run_id)

    def end_run(self, run_id: str, status: str, tags: Mapping[str, str] | None = None) -> None:
        """End a run another process started, after setting ``tags``."""
        self.runs.end_run(run_id, status, tags)

    def list_artifacts(self, run_id: str) -> list[str]:
        """The paths of every file a run holds."""
        return self.runs.artifacts(run_id)

    def read_artifact(self, run: StoredRun, artifact_path: str) -> bytes:
        """A run's artifact, verified by its recorded checksum and within its kind's size limit."""
        return self.artifacts.artifact(run, artifact_path).read_bytes()

    # -- spec and tasks (Catalogue) -----------------------------------------------------------------------------
    def spec_id(self) -> str | None:
        """The cloud's spec id, or ``None`` while no spec is set."""
        return self.catalogue.spec_id()

    def spec(self) -> FingerprintSpec | None:
        """The cloud's spec."""
        return self.catalogue.spec()

    def ensure_spec(self, spec: FingerprintSpec) -> None:
        """Set the cloud's spec on first use; afterwards refuse any other spec."""
        self.catalogue.ensure_spec(spec)

    def tasks(self, trusts: Callable[[str], bool] | None = None) -> list[CloudTask]:
        """Every visible task, one version each (by a trusted contributor when ``trusts`` is given), by name."""
        return self.catalogue.tasks(trusts)

    def task(self, name: str) -> CloudTask | None:
        """The visible version of one task, or ``None``."""
        return self.catalogue.task(name)

    def contribute(self, fingerprint: Fingerprint | None = None, *, name: str | None = None,
                   keywords: Sequence[str] | None = None, domain: str | None = None, data_uri: str | None = None,
                   shareable: bool | None = None, num_images: int | None = None, num_classes: int | None = None,
                   intrinsic_dim: float | None = None, knowledge: Iterable[Knowledge] = (),
                   contributor: str | None = None, spec: FingerprintSpec | None = None,
                   measured_by: Sequence[str] | None = None) -> CloudTask:
        """Add (or update) a task with its fingerprint and knowledge; atomic for readers
        (:meth:`Catalogue.contribute`)."""
        return self.catalogue.contribute(
            fingerprint, name=name, keywords=keywords, domain=domain, data_uri=data_uri, shareable=shareable,
            num_images=num_images, num_classes=num_classes, intrinsic_dim=intrinsic_dim, knowledge=knowledge,
            contributor=contributor, spec=spec, measured_by=measured_by)

    def as_tasks(self, tasks: Sequence[CloudTask], *, with_fingerprints: bool,
                 variants: Sequence[str] | None = None, moments: bool = True) -> list[Task]:
        """Selector inputs for cloud tasks."""
        return self.catalogue.as_tasks(tasks, with_fingerprints=with_fingerprints, variants=variants,
                                       moments=moments)

    def conforming(self, tasks: Sequence[CloudTask], spec: FingerprintSpec | None = None) -> list[CloudTask]:
        """The tasks whose fingerprint (if any) verifies and conforms to the spec; the others are quarantined."""
        return self.catalogue.conforming(tasks, spec)

    def initialise(self, spec: FingerprintSpec | None = None,
                   grants: Mapping[str, str] | None = None) -> dict[str, str]:
        """Create every experiment tfp writes, set the spec (default: the shipped one), name this account the
        cloud's owner and, on a ``tfp-basic-auth`` server, grant each account in ``grants`` (account to ``READ``,
        ``EDIT`` or ``MANAGE``) that permission on every one of them (``tfp cloud init``); ``{experiment: id}``."""

        grants = dict(grants or {})
        bad = [p for p in grants.values() if p not in ("READ", "EDIT", "MANAGE")]
        if bad:
            raise BadInputError(f"permission {bad[0]!r} is not READ, EDIT or MANAGE")
        ids = self.catalogue.initialise(spec or default_spec(), TFP_EXPERIMENTS)
        if grants:
            if not self.uri.startswith(("http://", "https://")):
                raise BadInputError("--grant needs a tracking server with accounts (`mlflow server --app-name "
                                    "tfp-basic-auth`); a local cloud has no accounts")
            from mlflow.server import get_app_client

            accounts = get_app_client("basic-auth", tracking_uri=self.uri)
            for experiment_id in ids.values():
                for account, permission in grants.items():
                    try:
                        accounts.grant_user_permission(account, "experiment", experiment_id, permission)
                    except Exception as exc:   # granted before: a rerun sets the permission asked for now
                        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                            raise
                        accounts.revoke_user_permission(account, "experiment", experiment_id)
                        accounts.grant_user_permission(account, "experiment", experiment_id, permission)
        return ids

    def pack(self) -> dict[str, int | str]:
        """Write a snapshot of every conforming fingerprint (``tfp cloud pack``)."""
        return self.catalogue.pack()

    # -- knowledge (KnowledgeLog) -------------------------------------------------------------------------------
    def add_knowledge(self, knowledge: Knowledge, *, contributor: str | None = None) -> str:
        """Store one knowledge record; returns its run id (the existing one for identical content)."""
        return self.knowledge_log.add_knowledge(knowledge, contributor=contributor)

    def add_knowledge_many(self, items: Sequence[Knowledge], *, contributor: str | None = None,
                           on_item: Callable[[Knowledge], None] | None = None) -> list[str]:
        """Store many knowledge records of one contributor with one search for what it stored before."""
        return self.knowledge_log.add_knowledge_many(items, contributor=contributor, on_item=on_item)

    def knowledge(self, task: str, kinds: Sequence[str] | None = None) -> list[Knowledge]:
        """A task's knowledge records (all kinds, or the given ones), oldest first."""
        return self.knowledge_log.knowledge(task, kinds)

    def knowledge_runs(self, kinds: Sequence[str]) -> list[StoredRun]:
        """The complete knowledge runs of the given kinds, of every task: read each with :meth:`read_knowledge`."""
        return self.knowledge_log.knowledge_runs(kinds)

    def read_knowledge(self, run: StoredRun) -> Knowledge | None:
        """A run from :meth:`knowledge_runs`, verified; ``None`` (and quarantined) when it fails a check."""
        return self.knowledge_log.read_knowledge(run)

    def policy(self, knowledge_run_id: str, policy_id: str) -> dict:
        """The albumentations JSON of a contributed policy."""
        return self.knowledge_log.policy(knowledge_run_id, policy_id)

    # -- verified reads (VerifiedArtifacts) ---------------------------------------------------------------------
    def fingerprint(self, task: CloudTask, spec: FingerprintSpec | None = None,
                    variants: Sequence[str] | None = None, moments: bool = True) -> Fingerprint:
        """A task's fingerprint, checked against its recorded checksum."""
        return self.artifacts.fingerprint(task, spec, variants, moments)

    def prefetch(self, tasks: Sequence[CloudTask]) -> None:
        """Bring the tasks' fingerprints into the local cache (the owner's snapshot when many are missing)."""
        self.artifacts.prefetch(tasks)

    def quarantine(self, what: str, run, reason: str, task: str | None = None) -> None:
        """Leave a run out of every query from now on, with the reason."""
        self.artifacts.quarantine(what, run, reason, task)

    def quarantined(self) -> list[dict[str, str]]:
        """The runs left out, with their reasons."""
        return self.artifacts.quarantined()


def open_cloud(cloud: KnowledgeStore | str | None) -> KnowledgeStore:
    """A cloud given as itself, as its tracking URI, or as ``None`` (``MLFLOW_TRACKING_URI``, else ./tfp-cloud).

    Returning a :class:`Cloud` as a :class:`~tfp_mlflow.cloud.base.KnowledgeStore` is where the type checker holds
    every method of the Cloud to the interface's signature."""
    if cloud is None or isinstance(cloud, str):
        return Cloud(cloud)
    return cloud
