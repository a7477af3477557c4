"""The knowledge cloud's storage interface: what every layer above ``cloud/`` may ask of it, and what it promises.

:class:`tfp_mlflow.cloud.Cloud` implements it on any MLflow tracking store (``sqlite:///``, ``postgresql://`` through
``mlflow server``, ``http(s)://``). Code above this package (recommend, train, tune, evaluation, workflows, the
server plugin) uses only these methods; only ``tfp_mlflow.cloud`` and the server plugin import MLflow. The contract
test suite ``tests/cloud/test_contract.py`` runs over every backend.

Contract
--------
* **Visibility.** A run becomes visible to every reader method only once it is complete: the tag
  ``tfp.complete`` is written last, after every artifact (:meth:`record` does this). A writer killed at any point
  leaves nothing a reader sees; re-running the same contribution then completes it.
* **Versions.** A task has one visible version: :meth:`contribute` writes a new task run and retires the older
  ones. Fields given as ``None`` keep the previous version's value.
* **Idempotent knowledge.** :meth:`add_knowledge` of content the same contributor already stored returns the
  existing run's id; another contributor's run with the same content key is a separate item.
* **Verified content.** Every file tfp writes into a run has its SHA-256 recorded in that run when it is written;
  every download is checked against it, and the local cache is keyed by it (never by a tag a writer chooses), so
  no run can shadow another's content.
* **Isolation.** A run that fails a check (a task field that does not parse, a fingerprint that does not conform
  to the spec, content whose checksum differs, a knowledge table that does not validate, a non-finite distance)
  is left out by every reader and listed by :meth:`quarantined`; it is never the error of a query.
* **One spec.** The first fingerprint (or :meth:`ensure_spec`) sets the cloud's spec; any other spec is refused
  with :class:`~tfp_mlflow.errors.SpecMismatchError`, never compared.
* **Errors.** Unreachable or refusing servers raise :class:`~tfp_mlflow.errors.CloudError` with one line; bad
  input raises :class:`~tfp_mlflow.errors.BadInputError` before anything is written.
* **Concurrency.** Any number of processes may contribute and read at once; an instance is meant for one
  thread at a time except for its read methods, which may be called from worker threads (the server does).
* **Caching.** Downloads are cached locally by content (checksum), so a repeated query costs two small calls;
  a cache never outlives a change to the tasks it describes.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

from tfp_mlflow.cloud.cache import LocalCache
from tfp_mlflow.cloud.knowledge import Knowledge
from tfp_mlflow.cloud.recorder import RunRecorder, StoredRun
from tfp_mlflow.cloud.records import CloudTask
from tfp_mlflow.fingerprint import Fingerprint
from tfp_mlflow.spec import FingerprintSpec
from tfp_mlflow.task import Task

__all__ = ["KnowledgeStore"]


@runtime_checkable
class KnowledgeStore(Protocol):
    """Tasks, their fingerprints and knowledge, the cloud's spec, and the runs tfp records (see the module's contract).
    """

    #: Where the store lives (a tracking URI).
    uri: str
    #: The local content-addressed cache of what the store served; results derived from the store's content (guard
    #: statistics, the knowledge map, plots) are kept there too, under keys that name the content they came from.
    cache: LocalCache

    # -- spec ---------------------------------------------------------------------------------------------------
    def spec_id(self) -> str | None:
        """The cloud's spec id, ``None`` while no fingerprint has been contributed."""

    def spec(self) -> FingerprintSpec | None:
        """The cloud's spec itself (downloaded once)."""

    def ensure_spec(self, spec: FingerprintSpec) -> None:
        """Set the spec on first use; afterwards raise ``SpecMismatchError`` for any other."""

    # -- tasks --------------------------------------------------------------------------------------------------
    def tasks(self, trusts: Callable[[str], bool] | None = None) -> list[CloudTask]:
        """Every visible task, one version each, sorted by name. With ``trusts`` (a predicate on contributors):
        the newest version by a trusted contributor, whoever wrote a newer one."""

    def task(self, name: str) -> CloudTask | None:
        """The visible version of one task, or ``None``."""

    def conforming(self, tasks: Sequence[CloudTask], spec: FingerprintSpec | None = None) -> list[CloudTask]:
        """The tasks whose fingerprint (if any) verifies and conforms to the spec; the others are quarantined."""

    def quarantine(self, what: str, run: Any, reason: str, task: str | None = None) -> None:
        """Leave a run out of every query from now on, with the reason."""

    def quarantined(self) -> list[dict[str, str]]:
        """The runs left out, with their reasons: ``[{"what", "run_id", "task", "contributor", "reason"}]``."""

    def contribute(self, fingerprint: Fingerprint | None = None, *, name: str | None = None,
                   keywords: Sequence[str] | None = None, domain: str | None = None, data_uri: str | None = None,
                   shareable: bool | None = None, num_images: int | None = None, num_classes: int | None = None,
                   intrinsic_dim: float | None = None, knowledge: Iterable[Knowledge] = (),
                   contributor: str | None = None, spec: FingerprintSpec | None = None,
                   measured_by: Sequence[str] | None = None) -> CloudTask:
        """Add or update a task with its fingerprint, fields and knowledge; atomic for readers."""

    # -- knowledge ----------------------------------------------------------------------------------------------
    def add_knowledge(self, knowledge: Knowledge, *, contributor: str | None = None) -> str:
        """Store one knowledge record; returns its run id (the existing one for identical content)."""

    def add_knowledge_many(self, items: Sequence[Knowledge], *, contributor: str | None = None,
                           on_item: Callable[[Knowledge], None] | None = None) -> list[str]:
        """:meth:`add_knowledge` for many records of one contributor (all validated before any is written), with
        one search for what it stored before; idempotent against what was stored when the call began."""

    def knowledge(self, task: str, kinds: Sequence[str] | None = None) -> list[Knowledge]:
        """A task's knowledge records (all kinds, or the given ones), oldest first."""

    def knowledge_runs(self, kinds: Sequence[str]) -> list[StoredRun]:
        """The complete knowledge runs of these kinds, of every task, newest first (one search per kind, not one per
        task); each is read with :meth:`read_knowledge`."""

    def read_knowledge(self, run: StoredRun) -> Knowledge | None:
        """A run from :meth:`knowledge_runs` as verified :class:`Knowledge`; ``None`` (and quarantined) when it
        fails a check."""

    def policy(self, knowledge_run_id: str, policy_id: str) -> dict:
        """The albumentations JSON of a contributed policy."""

    # -- fingerprints -------------------------------------------------------------------------------------------
    def fingerprint(self, task: CloudTask, spec: FingerprintSpec | None = None,
                    variants: Sequence[str] | None = None, moments: bool = True) -> Fingerprint:
        """A task's fingerprint (checked against its recorded checksum)."""

    def as_tasks(self, tasks: Sequence[CloudTask], *, with_fingerprints: bool,
                 variants: Sequence[str] | None = None, moments: bool = True) -> list[Task]:
        """Selector inputs for cloud tasks."""

    def prefetch(self, tasks: Sequence[CloudTask]) -> None:
        """Bring the tasks' fingerprints into the local cache, several at once (the owner's snapshot when many
        are missing); :func:`tfp_mlflow.prepared.prepared_sources` calls it before preparing a selector's
        sources."""

    def pack(self) -> dict[str, int | str]:
        """Write a snapshot of every conforming fingerprint, which new readers download instead of each file:
        ``{"run_id", "tasks", "sha256"}``."""

    # -- runs ---------------------------------------------------------------------------------------------------
    def experiment_id(self, name: str | None = None) -> str:
        """Id of a named experiment of the store (default: the cloud's own), created on first use."""

    def record(self, kind: str, tags: Mapping[str, str], *, experiment: str = ...,
               parent_run_id: str | None = None, complete: bool = True) -> AbstractContextManager[RunRecorder]:
        """A run whose life is a ``with`` block: complete and FINISHED on exit, FAILED on an exception."""

    def start_run(self, kind: str, tags: Mapping[str, str], *, experiment: str = ...,
                  parent_run_id: str | None = None) -> RunRecorder:
        """A run that outlives one block; end it with :meth:`RunRecorder.finish`."""

    def recorder(self, run_id: str) -> RunRecorder:
        """A recorder for a run another worker started."""

    def find_runs(self, kind: str, *, experiment: str = ..., **tags: str) -> list[StoredRun]:
        """Complete runs of ``kind`` with the given ``tfp.`` tags, newest first."""

    def get_run(self, run_id: str) -> StoredRun:
        """One run by id (raises when the store does not hold it)."""

    def end_run(self, run_id: str, status: str, tags: Mapping[str, str] | None = ...) -> None:
        """End a run another process started (pruned, lost), after setting ``tags``."""

    def list_artifacts(self, run_id: str) -> list[str]:
        """The paths of every file a run holds."""

    def read_artifact(self, run: StoredRun, artifact_path: str) -> bytes:
        """A run's artifact, verified by the checksum the run recorded and refused before download when larger
        than its kind's limit (:data:`~tfp_mlflow.cloud.schema.ARTIFACT_LIMITS`)."""
