"""The catalogue: the cloud's spec and tasks, one visible version each (:class:`Catalogue`, a part of
:class:`~tfp_mlflow.cloud.store.Cloud`).

Contract (the "versions", "one spec" and "visibility" clauses of :mod:`tfp_mlflow.cloud.base`): a contribution
writes its knowledge first, then the task run, complete last; older versions by the same contributor are retired
and the task-list stamp renewed, so a cached task list never outlives a change. The first fingerprint sets the
cloud's spec; any other spec is refused. Torch-free.
"""
from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict

from tfp_mlflow.cloud.integrity import VerifiedArtifacts
from tfp_mlflow.cloud.knowledge import Knowledge
from tfp_mlflow.cloud.knowledge_log import KnowledgeLog
from tfp_mlflow.cloud.records import CloudTask, short, task_from_run, validate_accounts, validate_knowledge
from tfp_mlflow.cloud.records import contributor as current_contributor
from tfp_mlflow.cloud.runs import RunLog
from tfp_mlflow.cloud.schema import Artifact, Kind, Param, Tag
from tfp_mlflow.errors import BadInputError, CloudError, SpecMismatchError, TamperedError
from tfp_mlflow.fingerprint import Fingerprint, validate_keywords, validate_task_name
from tfp_mlflow.spec import FingerprintSpec, default_spec
from tfp_mlflow.task import Task

__all__ = ["Catalogue"]


#: A task run counts as new to an incremental search when it ended this long before the newest one seen (writers'
#: clocks differ); a full search runs at least every :data:`FULL_SEARCH_SECONDS`.
CLOCK_MARGIN_MS = 10 * 60 * 1000
FULL_SEARCH_SECONDS = 3600


def _versions(entries) -> list[CloudTask]:
    return [CloudTask(**{**t, "keywords": tuple(t["keywords"]), "measured_by": tuple(t.get("measured_by", ()))})
            for t in entries]


class Catalogue:
    """The cloud's spec and tasks, written through the run log, read through the verified artifact reader."""

    def __init__(self, runs: RunLog, artifacts: VerifiedArtifacts, knowledge: KnowledgeLog) -> None:
        self.runs, self.artifacts, self.knowledge_log = runs, artifacts, knowledge
        self.uri = runs.uri
        #: The spec last read, by its id (a spec's id is the hash of its content: the same id is the same spec).
        self._spec: FingerprintSpec | None = None

    # -- spec ---------------------------------------------------------------------------------------------------
    def spec_id(self) -> str | None:
        """The cloud's spec id, or ``None`` while no spec is set."""
        return self.runs.spec_id()

    def spec(self) -> FingerprintSpec | None:
        """The cloud's spec (downloaded once and cached)."""
        spec_id = self.spec_id()
        if spec_id is None:
            return None
        known = self._spec
        if known is not None and known.id == spec_id:
            return known
        runs = self.runs.find_runs(Kind.SPEC, spec_id=spec_id)
        for run in reversed(runs):   # the first spec run wins; one whose file is not that spec is passed over
            if self.artifacts.is_quarantined(run.run_id):
                continue   # judged once: a hostile spec run costs its first reader only
            try:
                spec = FingerprintSpec.load(self.artifacts.artifact(run, Artifact.SPEC))
            except (BadInputError, TamperedError) as exc:
                self.artifacts.quarantine("spec", run, str(exc))
                continue
            if spec.id == spec_id:
                self._spec = spec
                return spec
            self.artifacts.quarantine("spec", run, f"its spec file has id {spec.id}, not {spec_id}")
        raise CloudError(f"the cloud at {self.uri} names spec {spec_id} but holds no spec run with that spec")

    def ensure_spec(self, spec: FingerprintSpec) -> None:
        """Set the cloud's spec on first use; afterwards refuse any other spec. Behind ``tfp-basic-auth`` only an
        admin sets it (``tfp cloud init``); a contributor arriving first is told so in one line."""
        current = self.spec_id()
        if current == spec.id:
            return
        if current is not None:
            raise SpecMismatchError(f"the cloud at {self.uri} uses spec {current}, not {spec.id}; re-fingerprint "
                                    f"with the cloud's spec (`tfp cloud spec` saves it)")
        try:
            with self.runs.record(Kind.SPEC, {Tag.SPEC_ID: spec.id}) as run:
                run.log_file(Artifact.SPEC, spec.save)
            if Tag.OWNER not in self.runs.experiment_tags():
                self.runs.set_experiment_tag(Tag.OWNER, current_contributor())
            self.runs.set_experiment_tag(Tag.SPEC_ID, spec.id)
        except Exception as exc:
            if getattr(exc, "error_code", "") != "PERMISSION_DENIED" and "only an admin" not in str(exc):
                raise
            raise CloudError(f"the cloud at {self.uri} has no spec yet and only an admin sets it there: ask an "
                             f"admin to run `tfp cloud init`") from None

    def initialise(self, spec: FingerprintSpec, experiments: Sequence[str]) -> dict[str, str]:
        """What ``tfp cloud init`` does, as the cloud's owner (an admin behind ``tfp-basic-auth``): every
        experiment tfp writes created, the spec set, the owner named; ``{experiment: id}``. Idempotent."""
        ids = {name: self.runs.experiment_id(name) for name in experiments}
        self.ensure_spec(spec)
        if Tag.OWNER not in self.runs.experiment_tags():
            self.runs.set_experiment_tag(Tag.OWNER, current_contributor())
        return ids

    # -- tasks --------------------------------------------------------------------------------------------------
    def tasks(self, trusts: Callable[[str], bool] | None = None) -> list[CloudTask]:
        """Every complete task, newest version per name, sorted by name.

        With ``trusts`` (a predicate on contributors), the newest version by a trusted contributor: trust is
        decided per run, so another account's newer version of a task never shadows a trusted one.

        The list is kept in the local cache under the cloud's task state (the experiment tag
        ``tfp.tasks_version``, renewed after every contribution, and the most recently completed task run), so a
        repeated query makes two small calls instead of searching every task run again; after a change, only the
        task runs that ended since the last list are searched (a full search runs at least hourly).
        """
        stamp = self.runs.experiment_tags().get(Tag.TASKS_VERSION, "")
        newest = self.runs.find_runs(Kind.TASK, max_results=1, newest="end")
        state = [self.uri, stamp,
                 [(r.run_id, r.end_time) for r in newest]]
        key = "tasks-" + hashlib.sha256(json.dumps(state).encode()).hexdigest()[:32]
        versions = self._cached_versions(key)
        if versions is None:
            newest_end = newest[0].end_time if newest else None
            versions, quarantined, full_at = self._searched_since_last(newest_end)
            entry = {"versions": [asdict(t) for t in versions], "quarantined": quarantined}
            self.artifacts.cache.write_json(key, entry)
            self.artifacts.cache.write_json(self._latest_key(), {**entry, "newest_end": newest_end, "full_at": full_at})
        chosen: dict[str, CloudTask] = {}
        for task in versions:   # newest first
            if trusts is None or trusts(task.contributor):
                chosen.setdefault(task.name, task)
        return [chosen[name] for name in sorted(chosen)]

    def _cached_versions(self, key: str) -> list[CloudTask] | None:
        cached = self.artifacts.cache.read_json(key)
        if not isinstance(cached, dict):
            return None
        try:
            versions = _versions(cached["versions"])
            self.artifacts.remember(cached["quarantined"])
            return versions
        except (TypeError, KeyError):
            return None  # written by another version: search again

    def _latest_key(self) -> str:
        return "tasks-latest-" + hashlib.sha256(json.dumps([self.uri, self.runs.experiment]).encode()).hexdigest()[:32]

    def _searched_since_last(self, newest_end: int | None) -> tuple[list[CloudTask], list[dict[str, str]], float]:
        """The task versions: the last list this cache kept, updated by the task runs that ended since (within
        :data:`CLOCK_MARGIN_MS` of its newest, for writers whose clocks lag); a full search when there is none,
        or when the last full search is older than :data:`FULL_SEARCH_SECONDS` (what an incremental search cannot
        see, a deleted run, is then gone). Also returns when the last full search ran."""
        latest = self.artifacts.cache.read_json(self._latest_key())
        base = None
        fresh = isinstance(latest, dict) and isinstance(latest.get("full_at"), (int, float)) and \
            time.time() - latest["full_at"] < FULL_SEARCH_SECONDS
        if fresh and isinstance(latest, dict) and isinstance(latest.get("newest_end"), int) and newest_end is not None:
            try:
                base = _versions(latest["versions"]), list(latest["quarantined"])
            except (TypeError, KeyError):
                base = None
        if base is None or latest is None:
            return (*self._search_tasks(), time.time())
        self.artifacts.remember(base[1])    # what the last list left out stays left out here too
        recent, quarantined = self._search_tasks(ended_after=latest["newest_end"] - CLOCK_MARGIN_MS)
        merged: dict[tuple[str, str], CloudTask] = {(t.name, t.contributor): t for t in recent}
        for task in base[0]:    # newest first: the recent runs, then the versions they did not replace
            merged.setdefault((task.name, task.contributor), task)
        left_out = list({q.get("run_id"): q for q in [*base[1], *quarantined]}.values())
        return list(merged.values()), left_out, latest["full_at"]

    def _search_tasks(self, ended_after: int | None = None) -> tuple[list[CloudTask], list[dict[str, str]]]:
        """The newest version of each task by each contributor, newest first; and the runs that do not parse."""
        versions: dict[tuple[str, str], CloudTask] = {}
        quarantined = []
        for run in self.runs.find_runs(Kind.TASK, ended_after=ended_after):
            try:
                task = task_from_run(run)
            except BadInputError as exc:
                self.artifacts.quarantine("task", run, f"the task run is unusable: {exc}")
                quarantined.append(self.artifacts.entry(run.run_id))
                continue
            versions.setdefault((task.name, task.contributor), task)  # runs come newest first
        return list(versions.values()), quarantined

    def task(self, name: str) -> CloudTask | None:
        """The newest complete version of a task, or ``None``."""
        for run in self.runs.find_runs(Kind.TASK, task=validate_task_name(name)):
            try:
                return task_from_run(run)
            except BadInputError as exc:
                self.artifacts.quarantine("task", run, f"the task run is unusable: {exc}")
        return None

    def contribute(self, fingerprint: Fingerprint | None = None, *, name: str | None = None,
                   keywords: Sequence[str] | None = None, domain: str | None = None, data_uri: str | None = None,
                   shareable: bool | None = None, num_images: int | None = None, num_classes: int | None = None,
                   intrinsic_dim: float | None = None, knowledge: Iterable[Knowledge] = (),
                   contributor: str | None = None, spec: FingerprintSpec | None = None,
                   measured_by: Sequence[str] | None = None) -> CloudTask:
        """Add (or update) a task with its fingerprint and knowledge; atomic from a reader's point of view.

        Knowledge is written first (each run complete on its own, deduplicated by content), then the task run,
        whose completion tag comes last; older versions of the task are then retired. Fields left ``None`` keep
        the previous version's value, so ``contribute(fp, name=...)`` attaches a fingerprint to a known task.
        ``measured_by`` names the other accounts whose outcomes and baselines on this task readers count.
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
            self.knowledge_log.add_knowledge(item, contributor=contributor)

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
        named = validate_accounts(measured_by if measured_by is not None else
                                  previous.measured_by if previous is not None and previous.contributor == contributor
                                  else ())
        if named:
            fields[Tag.MEASURED_BY] = ",".join(named)
        images = num_images if num_images is not None else (
            fingerprint.num_images if fingerprint else previous.num_images if previous else 0)
        classes = num_classes if num_classes is not None else (
            fingerprint.num_classes if fingerprint else previous.num_classes if previous else 0)
        if images < 0 or classes < 0 or (images and classes > images) or images > 10**10:
            raise BadInputError(f"task {name!r} claims {images} images in {classes} classes; that is impossible")
        dim = intrinsic_dim if intrinsic_dim is not None else (previous.intrinsic_dim if previous else None)
        with self.runs.record(Kind.TASK, fields) as run:
            params = {Param.NUM_IMAGES: str(images), Param.NUM_CLASSES: str(classes)}
            if dim is not None:
                params[Param.INTRINSIC_DIM] = repr(float(dim))
            sha = ""
            if fingerprint is not None:
                params[Param.NUM_DRAWS] = str(fingerprint.num_draws)
                sha = run.log_file(Artifact.FINGERPRINT, fingerprint.save)
                run.set_tags({Tag.SPEC_ID: fingerprint.spec_id})
                self.runs.log_dataset(run.run_id, name, sha, fields[Tag.DATA_URI])
            elif previous is not None and previous.has_fingerprint:
                # Keep the earlier fingerprint: copy it into the new version.
                old = self.artifacts.fetch(previous.run_id, Artifact.FINGERPRINT, previous.fingerprint_sha256)
                sha = run.log_file(Artifact.FINGERPRINT, lambda p: p.write_bytes(old.read_bytes()))
            run.log_params(params)
            run.set_tags({Tag.FINGERPRINT_SHA256: sha})
        self._retire_older(name, contributor, run.run_id, run.start_time)
        # Renewed after the retirement, so a cached task list never outlives this change.
        self._renew_tasks_version()
        return self.task(name) or task_from_run(self.runs.get_run(run.run_id))

    def _admit_fingerprint(self, name: str, fingerprint: Fingerprint, spec: FingerprintSpec | None) -> None:
        """Check a contributed fingerprint against the cloud's spec; the first one sets the spec (``spec``, else the
        shipped one, whichever made the fingerprint)."""
        cloud_spec = self.spec_id()
        if cloud_spec is not None:
            if fingerprint.spec_id != cloud_spec:
                raise SpecMismatchError(f"fingerprint of {name!r} has spec {fingerprint.spec_id} but the cloud at "
                                        f"{self.uri} uses {cloud_spec}; re-fingerprint it with the cloud's spec")
            spec_of_cloud = self.spec()
            assert spec_of_cloud is not None, "a cloud with a spec id has its spec"
            fingerprint.check_conforms(spec_of_cloud, f"fingerprint of {name!r}")
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
        for old in self.runs.find_runs(Kind.TASK, task=name, contributor=contributor):
            if old.run_id != run_id and old.start_time <= start_time:
                self.runs.delete_run(old.run_id)

    def _renew_tasks_version(self) -> None:
        """A new task-list version stamp: every cached task list is stale from now on."""
        self.runs.set_experiment_tag(Tag.TASKS_VERSION, uuid.uuid4().hex)

    def as_tasks(self, tasks: Sequence[CloudTask], *, with_fingerprints: bool,
                 variants: Sequence[str] | None = None, moments: bool = True) -> list[Task]:
        """Selector inputs for cloud tasks (fingerprints loaded through the cache when asked for)."""
        out = []
        for task in tasks:
            fingerprint = (self.artifacts.fingerprint(task, variants=variants, moments=moments)
                           if with_fingerprints and task.has_fingerprint else None)
            out.append(Task(name=task.name, keywords=task.keywords, num_images=task.num_images,
                            fingerprint=fingerprint, domain=task.domain, intrinsic_dim=task.intrinsic_dim))
        return out

    # -- integrity ----------------------------------------------------------------------------------------------
    def conforming(self, tasks: Sequence[CloudTask], spec: FingerprintSpec | None = None) -> list[CloudTask]:
        """The tasks whose fingerprint (if any) verifies and conforms to the cloud's spec; the others are
        quarantined (:meth:`VerifiedArtifacts.conforming`)."""
        return self.artifacts.conforming(tasks, self.spec_id(), lambda: spec or self.spec())

    def pack(self) -> dict[str, int | str]:
        """Write a snapshot: every conforming task's fingerprint in one file, the artifact of a complete
        ``snapshot`` run. A new client then downloads one file and the tasks contributed since, instead of every
        fingerprint (``tfp cloud pack``; run it on a schedule)."""
        return self.artifacts.pack(self.conforming(self.tasks()))
