"""The knowledge cloud on an MLflow tracking store: :class:`Cloud`, the implementation of
:class:`~tfp_mlflow.cloud.base.KnowledgeStore` (its contract is there).

Every write goes through :meth:`Cloud.record` (artifacts first, ``tfp.complete`` last), so readers never see half
a contribution. Torch-free.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

from tfp_mlflow import _json
from tfp_mlflow.cloud.cache import LocalCache
from tfp_mlflow.cloud.integrity import VerifiedReads
from tfp_mlflow.cloud.knowledge import MAX_ROWS, Knowledge, KnowledgeRow
from tfp_mlflow.cloud.recorder import RunRecorder, RunStore, StoredRun
from tfp_mlflow.cloud.records import (
    CloudTask,
    LazyTasks,
    dataset_input,
    safe_file,
    short,
    task_from_run,
    validate_knowledge,
)
from tfp_mlflow.cloud.records import contributor as current_contributor
from tfp_mlflow.cloud.schema import (
    CLOUD_EXPERIMENT,
    KNOWLEDGE_KINDS,
    Artifact,
    Kind,
    Metric,
    Param,
    Tag,
    artifact_limit,
    complete_filter,
)
from tfp_mlflow.errors import BadInputError, CloudError, SpecMismatchError, TamperedError
from tfp_mlflow.fingerprint import Fingerprint, validate_keywords, validate_task_name
from tfp_mlflow.selectors import PreparedSources, Selector
from tfp_mlflow.spec import FingerprintSpec, default_spec
from tfp_mlflow.task import Task

__all__ = ["Cloud", "CloudTask", "RunRecorder", "StoredRun", "create_sqlite_store", "default_tracking_uri"]

DEFAULT_HOME = "tfp-cloud"


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded default: ``sqlite:///./tfp-cloud/mlflow.db``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    home = Path(DEFAULT_HOME).resolve()
    return f"sqlite:///{home / 'mlflow.db'}"


def _open_sqlite_store(uri: str, database: Path):
    """A client of a SQLite store, whose creation (on first use: MLflow's schema creation and migrations, run when
    the client is constructed) is serialised across processes.

    Several processes creating one new database's tables at once collide (``table _alembic_tmp_latest_metrics
    already exists``, ``duplicate column name: step``); an exclusive lock on ``<database>.lock`` makes the first
    create the schema while the others wait, then find it.
    """
    from mlflow.tracking import MlflowClient

    try:
        import fcntl
    except ImportError:          # Windows: no advisory locks; first writers there should not start at once
        return MlflowClient(tracking_uri=uri)
    with open(database.with_name(database.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client = MlflowClient(tracking_uri=uri)
            _ = client._tracking_client.store     # created here, under the lock, whatever MLflow's version does
            return client
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def create_sqlite_store(database: str | os.PathLike) -> str:
    """Create (or migrate) the MLflow SQLite store at ``database`` and return its ``sqlite:///`` URI; the schema
    is MLflow's own at this MLflow's head revision. Its folder is created."""
    database = Path(database).absolute()
    database.parent.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{database}"
    _open_sqlite_store(uri, database).search_experiments(max_results=1)
    return uri


class Cloud(VerifiedReads, RunStore):
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
    """

    def __init__(self, tracking_uri: str | None = None, *, cache_dir: str | os.PathLike | None = None,
                 experiment: str = CLOUD_EXPERIMENT) -> None:
        # Fail in seconds, not minutes, when a server is down.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        # MLflow prints run URLs to stdout for http servers, which would corrupt `tfp recommend --json`.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        from mlflow.tracking import MlflowClient

        # A new SQLite store logs its schema creation at INFO on every first use; tfp's users need not see it.
        for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.uri = tracking_uri or default_tracking_uri()
        self.experiment = experiment
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        if self.uri.startswith("sqlite:///"):
            self.client = _open_sqlite_store(self.uri, Path(self.uri.removeprefix("sqlite:///")))
        else:
            self.client = MlflowClient(tracking_uri=self.uri)
        self.cache = LocalCache(cache_dir)
        self._experiment_ids: dict[str, str] = {}
        self._quarantined: dict[str, dict[str, str]] = {}

    # -- experiments --------------------------------------------------------------------------------------------
    def _artifact_location(self, name: str) -> str | None:
        if self.uri.startswith("sqlite:///"):
            return (Path(self.uri.removeprefix("sqlite:///")).parent / "artifacts" / name).as_uri()
        return None

    def experiment_id(self, name: str | None = None) -> str:
        """Id of the named experiment (default: the cloud's own), created on first use."""
        name = name or self.experiment
        if name in self._experiment_ids:
            return self._experiment_ids[name]
        try:
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                try:
                    experiment_id = self.client.create_experiment(name, self._artifact_location(name))
                except Exception:  # created concurrently by another contributor
                    experiment = self.client.get_experiment_by_name(name)
                    if experiment is None:
                        raise
                    experiment_id = experiment.experiment_id
            else:
                if experiment.lifecycle_stage == "deleted":
                    self.client.restore_experiment(experiment.experiment_id)
                experiment_id = experiment.experiment_id
        except CloudError:
            raise
        except Exception as exc:
            raise CloudError(f"cannot reach the cloud at {self.uri} ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); start the server or check "
                             f"--tracking-uri / MLFLOW_TRACKING_URI") from None
        self._experiment_ids[name] = experiment_id
        return experiment_id

    # -- spec ---------------------------------------------------------------------------------------------------
    def spec_id(self) -> str | None:
        """The cloud's spec id, or ``None`` while no spec is set."""
        experiment = self.client.get_experiment(self.experiment_id())
        return experiment.tags.get(Tag.SPEC_ID)

    def spec(self) -> FingerprintSpec | None:
        """The cloud's spec (downloaded once and cached)."""
        spec_id = self.spec_id()
        if spec_id is None:
            return None
        runs = self._search(complete_filter(Kind.SPEC, spec_id=spec_id))
        for run in reversed(runs):   # the first spec run wins; one whose file is not that spec is passed over
            if run.info.run_id in self._quarantined:
                continue   # judged once: a hostile spec run costs its first reader only
            try:
                spec = FingerprintSpec.load(self._artifact(run, Artifact.SPEC))
            except (BadInputError, TamperedError) as exc:
                self.quarantine("spec", run, str(exc))
                continue
            if spec.id == spec_id:
                return spec
            self.quarantine("spec", run, f"its spec file has id {spec.id}, not {spec_id}")
        raise CloudError(f"the cloud at {self.uri} names spec {spec_id} but holds no spec run with that spec")

    def ensure_spec(self, spec: FingerprintSpec) -> None:
        """Set the cloud's spec on first use; afterwards refuse any other spec."""
        current = self.spec_id()
        if current == spec.id:
            return
        if current is not None:
            raise SpecMismatchError(f"the cloud at {self.uri} uses spec {current}, not {spec.id}; re-fingerprint "
                                    f"with the cloud's spec (`tfp cloud spec` saves it)")
        with self.record(Kind.SPEC, {Tag.SPEC_ID: spec.id}) as run:
            run.log_file(Artifact.SPEC, spec.save)
        self.client.set_experiment_tag(self.experiment_id(), Tag.OWNER, current_contributor())
        self.client.set_experiment_tag(self.experiment_id(), Tag.SPEC_ID, spec.id)

    # -- tasks --------------------------------------------------------------------------------------------------
    def tasks(self, trusts: Callable[[str], bool] | None = None) -> list[CloudTask]:
        """Every complete task, newest version per name, sorted by name.

        With ``trusts`` (a predicate on contributors), the newest version by a trusted contributor: trust is
        decided per run, so another account's newer version of a task never shadows a trusted one.

        The list is kept in the local cache under the cloud's task state (the experiment tag
        ``tfp.tasks_version``, renewed after every contribution, and the most recently completed task run), so a
        repeated query makes two small calls instead of searching every task run again.
        """
        experiment = self.client.get_experiment(self.experiment_id())
        newest = self.client.search_runs([experiment.experiment_id], filter_string=complete_filter(Kind.TASK),
                                         max_results=1, order_by=["attributes.end_time DESC"])
        state = [self.uri, experiment.tags.get(Tag.TASKS_VERSION, ""),
                 [(r.info.run_id, r.info.end_time) for r in newest]]
        key = "tasks-" + hashlib.sha256(json.dumps(state).encode()).hexdigest()[:32]
        cached = self.cache.read_json(key)
        versions = None
        if isinstance(cached, dict):
            try:
                versions = [CloudTask(**{**t, "keywords": tuple(t["keywords"])}) for t in cached["versions"]]
                self._quarantined.update({q["run_id"]: q for q in cached["quarantined"]})
            except (TypeError, KeyError):
                versions = None  # written by another version: search again
        if versions is None:
            versions, quarantined = self._search_tasks()
            self.cache.write_json(key, {"versions": [asdict(t) for t in versions], "quarantined": quarantined})
        chosen: dict[str, CloudTask] = {}
        for task in versions:   # newest first
            if trusts is None or trusts(task.contributor):
                chosen.setdefault(task.name, task)
        return [chosen[name] for name in sorted(chosen)]

    def _search_tasks(self) -> tuple[list[CloudTask], list[dict[str, str]]]:
        """The newest version of each task by each contributor, newest first; and the runs that do not parse."""
        versions: dict[tuple[str, str], CloudTask] = {}
        quarantined = []
        for run in self._search(complete_filter(Kind.TASK)):
            try:
                task = task_from_run(run)
            except BadInputError as exc:
                self.quarantine("task", run, f"the task run is unusable: {exc}")
                quarantined.append(self._quarantined[run.info.run_id])
                continue
            versions.setdefault((task.name, task.contributor), task)  # runs come newest first
        return list(versions.values()), quarantined

    def task(self, name: str) -> CloudTask | None:
        """The newest complete version of a task, or ``None``."""
        for run in self._search(complete_filter(Kind.TASK, task=validate_task_name(name))):
            try:
                return task_from_run(run)
            except BadInputError as exc:
                self.quarantine("task", run, f"the task run is unusable: {exc}")
        return None

    def contribute(self, fingerprint: Fingerprint | None = None, *, name: str | None = None,
                   keywords: Sequence[str] | None = None, domain: str | None = None, data_uri: str | None = None,
                   shareable: bool | None = None, num_images: int | None = None, num_classes: int | None = None,
                   intrinsic_dim: float | None = None, knowledge: Iterable[Knowledge] = (),
                   contributor: str | None = None, spec: FingerprintSpec | None = None) -> CloudTask:
        """Add (or update) a task with its fingerprint and knowledge; atomic from a reader's point of view.

        Knowledge is written first (each run complete on its own, deduplicated by content), then the task run,
        whose completion tag comes last; older versions of the task are then retired. Fields left ``None`` keep
        the previous version's value, so ``contribute(fp, name=...)`` attaches a fingerprint to a known task.
        """
        name = validate_task_name(name or (fingerprint.name if fingerprint else ""))
        if shareable and not data_uri:
            raise BadInputError("--shareable needs --data-uri (where others can fetch the data)")
        previous = self.task(name)
        if fingerprint is not None:
            self._admit_fingerprint(name, fingerprint, spec)
        contributor = contributor or current_contributor()
        knowledge = list(knowledge)
        for item in knowledge:          # all of it checked before anything is written
            validate_knowledge(item)
            if item.task != name:
                raise BadInputError(f"knowledge of task {item.task!r} given while contributing {name!r}")
        for item in knowledge:
            self.add_knowledge(item, contributor=contributor)

        def pick(value, old, default):
            return value if value is not None else (old if previous is not None else default)

        keywords = validate_keywords(list(keywords if keywords is not None else (
            fingerprint.keywords if fingerprint and fingerprint.keywords else
            previous.keywords if previous else ())))
        fields = {
            Tag.TASK: name, Tag.KEYWORDS: ",".join(keywords),
            Tag.DOMAIN: short(pick(domain, previous and previous.domain, ""), "domain"),
            Tag.SHAREABLE: str(bool(pick(shareable, previous and previous.shareable, False))).lower(),
            Tag.DATA_URI: short(pick(data_uri, previous and previous.data_uri, ""), "data URI"),
            Tag.CONTRIBUTOR: contributor,
        }
        images = num_images if num_images is not None else (
            fingerprint.num_images if fingerprint else previous.num_images if previous else 0)
        classes = num_classes if num_classes is not None else (
            fingerprint.num_classes if fingerprint else previous.num_classes if previous else 0)
        if images < 0 or classes < 0 or (images and classes > images) or images > 10**10:
            raise BadInputError(f"task {name!r} claims {images} images in {classes} classes; that is impossible")
        dim = intrinsic_dim if intrinsic_dim is not None else (previous.intrinsic_dim if previous else None)
        with self.record(Kind.TASK, fields) as run:
            params = {Param.NUM_IMAGES: str(images), Param.NUM_CLASSES: str(classes)}
            if dim is not None:
                params[Param.INTRINSIC_DIM] = repr(float(dim))
            sha = ""
            if fingerprint is not None:
                params[Param.NUM_DRAWS] = str(fingerprint.num_draws)
                sha = run.log_file(Artifact.FINGERPRINT, fingerprint.save)
                run.set_tags({Tag.SPEC_ID: fingerprint.spec_id})
                self.client.log_inputs(run.run_id, datasets=[dataset_input(name, sha, fields[Tag.DATA_URI])])
            elif previous is not None and previous.has_fingerprint:
                # Keep the earlier fingerprint: copy it into the new version.
                old = self.cache.fetch(self.client, previous.run_id, Artifact.FINGERPRINT,
                                       key=previous.fingerprint_sha256, sha256=previous.fingerprint_sha256)
                sha = run.log_file(Artifact.FINGERPRINT, lambda p: p.write_bytes(old.read_bytes()))
            run.log_params(params)
            run.set_tags({Tag.FINGERPRINT_SHA256: sha})
        self._retire_older(name, contributor, run.run_id, run.start_time)
        # Renewed after the retirement, so a cached task list never outlives this change.
        self._renew_tasks_version()
        return self.task(name) or task_from_run(self.client.get_run(run.run_id))

    def _admit_fingerprint(self, name: str, fingerprint: Fingerprint, spec: FingerprintSpec | None) -> None:
        """Check a contributed fingerprint against the cloud's spec; the first one sets the spec (``spec``, else the
        shipped one, whichever made the fingerprint)."""
        cloud_spec = self.spec_id()
        if cloud_spec is not None:
            if fingerprint.spec_id != cloud_spec:
                raise SpecMismatchError(f"fingerprint of {name!r} has spec {fingerprint.spec_id} but the cloud at "
                                        f"{self.uri} uses {cloud_spec}; re-fingerprint it with the cloud's spec")
            fingerprint.check_conforms(self.spec(), f"fingerprint of {name!r}")
            return
        if spec is None or spec.id != fingerprint.spec_id:
            spec = default_spec()
        if spec.id != fingerprint.spec_id:
            raise SpecMismatchError(f"the cloud has no spec yet and fingerprint {name!r} was not made with "
                                    f"the shipped spec; pass its spec (--spec) to set the cloud's spec")
        fingerprint.check_conforms(spec, f"fingerprint of {name!r}")
        self.ensure_spec(spec)

    def _retire_older(self, name: str, contributor: str, run_id: str, start_time: int) -> None:
        """Delete this contributor's older versions of a task where the server allows it (behind tfp-basic-auth a
        complete run is immutable: they stay, and readers take the newest)."""
        for old in self._search(complete_filter(Kind.TASK, task=name, contributor=contributor)):
            if old.info.run_id != run_id and old.info.start_time <= start_time:
                try:
                    self.client.delete_run(old.info.run_id)
                except Exception as exc:
                    if getattr(exc, "error_code", "") != "PERMISSION_DENIED":
                        raise

    def _renew_tasks_version(self) -> None:
        """A new task-list version stamp: every cached task list is stale from now on."""
        for attempt in range(5):   # SQLite: two contributors inserting the tag at once collide; the next try updates
            try:
                self.client.set_experiment_tag(self.experiment_id(), Tag.TASKS_VERSION, uuid.uuid4().hex)
                return
            except Exception:
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    # -- knowledge ----------------------------------------------------------------------------------------------
    def add_knowledge(self, knowledge: Knowledge, *, contributor: str | None = None) -> str:
        """Store one knowledge run (idempotent: returns the existing run id when the same contributor already
        stored the same content; another contributor's run with that content key is a different item)."""
        validate_knowledge(knowledge)
        key = knowledge.key()
        contributor = contributor or knowledge.contributor or current_contributor()
        for run in self._search(complete_filter(Kind.KNOWLEDGE, knowledge_key=key, contributor=contributor)):
            return run.info.run_id
        tags = {Tag.TASK: knowledge.task, Tag.KNOWLEDGE: knowledge.kind, Tag.KNOWLEDGE_KEY: key,
                Tag.CONTRIBUTOR: contributor,
                Tag.PROVENANCE: short(knowledge.provenance, "provenance")}
        with self.record(Kind.KNOWLEDGE, tags) as run:
            table = {"task": knowledge.task, "kind": knowledge.kind, "provenance": knowledge.provenance,
                     "rows": [asdict(r) for r in knowledge.rows]}
            run.log_file(f"knowledge/{knowledge.kind}.json", lambda p: p.write_text(json.dumps(table, sort_keys=True)))
            for policy_id, policy in sorted(knowledge.policies.items()):
                run.log_file(f"policy/{safe_file(policy_id)}.json",
                             lambda p, policy=policy: p.write_text(json.dumps(policy, indent=1)))
            best = [r.balanced_accuracy for r in knowledge.rows if r.balanced_accuracy is not None]
            if best:
                run.log_metrics({Metric.BEST_BALANCED_ACCURACY: max(best)})
            run.log_params({Param.ROWS: len(knowledge.rows)})
        return run.run_id

    def knowledge(self, task: str, kinds: Sequence[str] | None = None) -> list[Knowledge]:
        """Complete knowledge of a task (all kinds, or the given ones), oldest first."""
        runs = self._search(complete_filter(Kind.KNOWLEDGE, task=validate_task_name(task)))
        out = []
        for run in reversed(runs):
            kind = run.data.tags.get(Tag.KNOWLEDGE, "")
            if kinds is not None and kind not in kinds:
                continue
            try:
                out.append(self._read_knowledge(run, task, kind))
            except (BadInputError, TamperedError) as exc:
                self.quarantine("knowledge", run, str(exc), task=task)
        return out

    def knowledge_runs(self, kinds: Sequence[str]) -> list:
        """The complete knowledge runs of the given kinds, of every task (newest first; one search per kind, not
        one per task): read each with :meth:`read_knowledge`."""
        return [run for kind in kinds for run in self._search(complete_filter(Kind.KNOWLEDGE, knowledge=kind))]

    def read_knowledge(self, run) -> Knowledge | None:
        """A run from :meth:`knowledge_runs` as :class:`Knowledge`, verified; ``None`` (and quarantined) when it
        fails a check."""
        tags = run.data.tags
        try:
            return self._read_knowledge(run, validate_task_name(tags.get(Tag.TASK, "")), tags.get(Tag.KNOWLEDGE, ""))
        except (BadInputError, TamperedError) as exc:
            self.quarantine("knowledge", run, str(exc), task=tags.get(Tag.TASK, ""))
            return None

    def _read_knowledge(self, run, task: str, kind: str) -> Knowledge:
        """One knowledge run's table, verified and validated (what a contributor's ``validate_knowledge`` checks)."""
        if kind not in KNOWLEDGE_KINDS:
            raise BadInputError(f"knowledge kind {kind[:40]!r} is unknown")
        artifact = f"knowledge/{kind}.json"
        table = _json.loads(self._artifact(run, artifact).read_bytes(), f"{artifact} of run {run.info.run_id}",
                            max_bytes=artifact_limit(artifact))
        if not isinstance(table, dict) or not isinstance(table.get("rows"), list):
            raise BadInputError(f"{artifact} of run {run.info.run_id} is not a knowledge table")
        if len(table["rows"]) > MAX_ROWS:   # before a single row becomes an object
            raise BadInputError(f"{artifact} of run {run.info.run_id} has {len(table['rows']):,} rows; at most "
                                f"{MAX_ROWS:,} are accepted")
        fields = KnowledgeRow.__dataclass_fields__
        try:
            rows = tuple(KnowledgeRow(**{k: v for k, v in r.items() if k in fields}) for r in table["rows"])
        except (TypeError, AttributeError):
            raise BadInputError(f"{artifact} of run {run.info.run_id} holds rows that are not results") from None
        knowledge = Knowledge(task=task, kind=kind, rows=rows, run_id=run.info.run_id,
                              provenance=str(table.get("provenance", "")),
                              contributor=run.data.tags.get(Tag.CONTRIBUTOR, ""))
        validate_knowledge(knowledge)
        return knowledge

    def policy(self, knowledge_run_id: str, policy_id: str) -> dict:
        """The albumentations JSON of a policy, as contributed (verified by the checksum its run recorded)."""
        artifact = f"policy/{safe_file(policy_id)}.json"
        policy = _json.loads(self._artifact(self.client.get_run(knowledge_run_id), artifact).read_bytes(),
                             f"{artifact} of run {knowledge_run_id}")
        if not isinstance(policy, dict):
            raise BadInputError(f"{artifact} of run {knowledge_run_id} is not an albumentations policy")
        return policy

    # -- fingerprints -------------------------------------------------------------------------------------------
    def fingerprint(self, task: CloudTask, spec: FingerprintSpec | None = None,
                    variants: Sequence[str] | None = None, moments: bool = True) -> Fingerprint:
        """The task's fingerprint, from the local cache when its checksum is already there.

        ``variants`` and ``moments`` limit what is decompressed (see :meth:`Fingerprint.load`).
        """
        if not task.has_fingerprint:
            raise BadInputError(f"task {task.name!r} has no fingerprint in the cloud")
        path = self.cache.fetch(self.client, task.run_id, Artifact.FINGERPRINT, key=task.fingerprint_sha256,
                                sha256=task.fingerprint_sha256)
        try:
            return Fingerprint.load(path, spec, variants=variants, moments=moments)
        except BadInputError as exc:
            raise BadInputError(str(exc).replace(f"fingerprint file {str(path)!r}",
                                                 f"the fingerprint of task {task.name!r}")) from None

    def as_tasks(self, tasks: Sequence[CloudTask], *, with_fingerprints: bool,
                 variants: Sequence[str] | None = None, moments: bool = True) -> list[Task]:
        """Selector inputs for cloud tasks (fingerprints loaded through the cache when asked for)."""
        out = []
        for task in tasks:
            fingerprint = (self.fingerprint(task, variants=variants, moments=moments)
                           if with_fingerprints and task.has_fingerprint else None)
            out.append(Task(name=task.name, keywords=task.keywords, num_images=task.num_images,
                            fingerprint=fingerprint, domain=task.domain, intrinsic_dim=task.intrinsic_dim))
        return out

    def prepared(self, selector: Selector, tasks: Sequence[CloudTask]) -> PreparedSources:
        """The tasks prepared for a fingerprint selector, from the local cache when these versions were seen before.

        The key covers the selector, its parameters and each task's run, checksum and ranking fields, so any
        contribution gives a new key. Fingerprints are loaded one at a time (only the variant the selector reads).
        """
        identity = [repr(selector), self.spec_id(), [(t.name, t.run_id, t.fingerprint_sha256, t.num_images,
                                                      t.intrinsic_dim) for t in tasks]]
        key = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]

        def build() -> PreparedSources:
            # A cold query waits on the network: the snapshot, then the missing fingerprints several at once.
            self.prefetch(tasks)
            return selector.prepare(LazyTasks(self, tasks, selector.variants or ("small",), selector.needs_moments))
        return self.cache.prepared(key, build)


