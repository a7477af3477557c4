"""The verified artifact reader: what every reader of the cloud checks, and the snapshot that feeds a new reader
(:class:`VerifiedArtifacts`, a part of :class:`~tfp_mlflow.cloud.store.Cloud`).

Contract (the "verified content", "isolation" and "caching" clauses of :mod:`tfp_mlflow.cloud.base`):

* every artifact is fetched through the local cache keyed and verified by the SHA-256 its run recorded, after its
  listed size was checked against what a conforming one of its kind needs;
* a run that fails a check is quarantined (left out, listed with its reason), never the error of a query;
* fingerprints conform to the cloud's spec before anything reads them (verdicts cached by checksum and spec), and
  the cache never keeps a file that failed its check;
* a snapshot (``tfp cloud pack``) hands a new reader every fingerprint in one file, each member verified, and only
  the cloud owner's snapshot is read.

Torch-free.
"""
from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from tfp_mlflow._threads import thread_map
from tfp_mlflow.cloud.cache import LocalCache
from tfp_mlflow.cloud.recorder import StoredRun
from tfp_mlflow.cloud.records import CloudTask, contributor
from tfp_mlflow.cloud.runs import RunLog
from tfp_mlflow.cloud.schema import Artifact, Kind, Tag, sha256_tag
from tfp_mlflow.errors import BadInputError, CloudError, TamperedError
from tfp_mlflow.fingerprint import Fingerprint
from tfp_mlflow.spec import FingerprintSpec

__all__ = ["VerifiedArtifacts", "SNAPSHOT_MIN_MISSING"]

#: Below this many missing fingerprints a reader downloads them one by one rather than the snapshot.
SNAPSHOT_MIN_MISSING = 20


class VerifiedArtifacts:
    """Verified artifacts with their cache and quarantine; fingerprint conformance and snapshots.

    Parameters
    ----------
    runs : RunLog
        The cloud's runs (artifacts are read from them; snapshots are written as runs).
    cache : LocalCache
        Where verified files are kept, by checksum.
    """

    def __init__(self, runs: RunLog, cache: LocalCache) -> None:
        self.runs, self.cache = runs, cache
        self._quarantined: dict[str, dict[str, str]] = {}

    # -- reading ------------------------------------------------------------------------------------------------
    def artifact(self, run: StoredRun, artifact_path: str) -> Path:
        """A run's artifact through the local cache, keyed and verified by the SHA-256 the run recorded when the
        file was written (:func:`~tfp_mlflow.cloud.schema.sha256_tag`), never by a name a writer chooses.

        A run written before checksums were recorded is cached under its own run id: no other run can shadow it.
        """
        sha = run.tags.get(sha256_tag(artifact_path))
        if sha is None and artifact_path == Artifact.FINGERPRINT:
            sha = run.tags.get(Tag.FINGERPRINT_SHA256) or None
        if sha is not None:
            return self.fetch(run.run_id, artifact_path, sha)
        return self.cache.fetch(self.runs, run.run_id, artifact_path, key=f"run-{run.run_id}-{artifact_path}")

    def fetch(self, run_id: str, artifact_path: str, sha256: str) -> Path:
        """The artifact whose recorded checksum is ``sha256``, from the cache or downloaded and verified."""
        return self.cache.fetch(self.runs, run_id, artifact_path, key=sha256, sha256=sha256)

    def fingerprint(self, task: CloudTask, spec: FingerprintSpec | None = None,
                    variants: Sequence[str] | None = None, moments: bool = True) -> Fingerprint:
        """The task's fingerprint, verified by its checksum; ``variants`` and ``moments`` limit what is
        decompressed (see :meth:`Fingerprint.load`)."""
        if not task.has_fingerprint:
            raise BadInputError(f"task {task.name!r} has no fingerprint in the cloud")
        path = self.fetch(task.run_id, Artifact.FINGERPRINT, task.fingerprint_sha256)
        try:
            return Fingerprint.load(path, spec, variants=variants, moments=moments)
        except BadInputError as exc:
            raise BadInputError(str(exc).replace(f"fingerprint file {str(path)!r}",
                                                 f"the fingerprint of task {task.name!r}")) from None

    # -- quarantine ---------------------------------------------------------------------------------------------
    def quarantine(self, what: str, run, reason: str, task: str | None = None) -> None:
        """Leave a run (a :class:`StoredRun` or a :class:`CloudTask`) out of every query from now on, with the
        reason."""
        tags = getattr(run, "tags", {})
        run_id = run.run_id
        self._quarantined[run_id] = {
            "what": what, "run_id": run_id, "task": task or tags.get(Tag.TASK, getattr(run, "name", "")),
            "contributor": tags.get(Tag.CONTRIBUTOR, getattr(run, "contributor", "")),
            "reason": reason.replace(str(self.cache.root), "<cache>")}

    def is_quarantined(self, run_id: str) -> bool:
        return run_id in self._quarantined

    def entry(self, run_id: str) -> dict[str, str]:
        """The quarantine entry of a run (``KeyError`` when it is not quarantined)."""
        return self._quarantined[run_id]

    def remember(self, entries: Sequence[dict[str, str]]) -> None:
        """Quarantine entries found earlier (a cached task list carries those of its search)."""
        self._quarantined.update({q["run_id"]: q for q in entries})

    def quarantined(self) -> list[dict[str, str]]:
        """Runs this cloud's readers passed over since it was opened, with the reason (a task whose fields do not
        parse, a fingerprint that does not conform to the spec, content whose checksum differs, a knowledge table
        that is not one): ``[{"what", "run_id", "task", "contributor", "reason"}]``."""
        return sorted(self._quarantined.values(), key=lambda q: (q["task"], q["what"], q["run_id"]))

    # -- conformance --------------------------------------------------------------------------------------------
    def conforming(self, tasks: Sequence[CloudTask], spec_id: str | None,
                   load_spec: Callable[[], FingerprintSpec | None]) -> list[CloudTask]:
        """The tasks whose fingerprint (when they have one) downloads with the checksum its run recorded and
        conforms to the cloud's spec (id ``spec_id``; ``load_spec()`` is called only when a verdict is missing);
        the others are quarantined. Each verdict is cached by checksum and spec, so a fingerprint is checked once
        per machine."""
        with_fp = [t for t in tasks if t.has_fingerprint]
        if not with_fp:
            return list(tasks)
        verdicts = self.cache.read_json(f"verdicts-{spec_id}")
        verdicts = verdicts if isinstance(verdicts, dict) else {}
        missing = [t for t in with_fp if t.fingerprint_sha256 not in verdicts]
        if missing:
            verdicts = self._judge(missing, spec_id, load_spec, verdicts)
        out = []
        for task in tasks:
            reason = verdicts.get(task.fingerprint_sha256, "") if task.has_fingerprint else ""
            if reason:
                self.quarantine("fingerprint", task, f"its fingerprint is unusable: {reason}", task=task.name)
            else:
                out.append(task)
        return out

    def _judge(self, missing: Sequence[CloudTask], spec_id: str | None,
               load_spec: Callable[[], FingerprintSpec | None], verdicts: dict[str, str]) -> dict[str, str]:
        self.prefetch(missing)
        spec = load_spec()

        def verdict(task: CloudTask) -> str:
            try:
                self.fingerprint(task, spec)
                return ""
            except (BadInputError, TamperedError) as exc:
                return str(exc)   # quarantine() hides the cache's path
        # Decompressing and checking a fingerprint releases the GIL for most of its time: one thread a core.
        for task, reason in zip(missing, thread_map(verdict, missing)):
            verdicts[task.fingerprint_sha256] = reason
            if reason:   # the cache never keeps what failed its check (the verdict remembers the failure)
                self.cache.path(task.fingerprint_sha256, Artifact.FINGERPRINT).unlink(missing_ok=True)
        fresh = self.cache.read_json(f"verdicts-{spec_id}")   # another process may have added some meanwhile
        verdicts = {**(fresh if isinstance(fresh, dict) else {}), **verdicts}
        self.cache.write_json(f"verdicts-{spec_id}", verdicts)
        return verdicts

    # -- snapshots ----------------------------------------------------------------------------------------------
    def prefetch(self, tasks: Sequence[CloudTask]) -> None:
        """Bring the tasks' fingerprints into the local cache: from the newest snapshot (:meth:`pack`) when many are
        missing, the rest eight downloads at a time; every file is verified against its checksum either way."""
        missing = {t.fingerprint_sha256: t for t in tasks if t.has_fingerprint
                   and not self.cache.path(t.fingerprint_sha256, Artifact.FINGERPRINT).is_file()}
        if len(missing) >= SNAPSHOT_MIN_MISSING:
            # The cloud's owner's newest snapshot: who wrote it decides, never a start time a writer chose.
            owner = self.runs.experiment_tags().get(Tag.OWNER)
            snapshots = [run for run in self.runs.find_runs(Kind.SNAPSHOT)
                         if owner is None or run.tags.get(Tag.CONTRIBUTOR) == owner]
            for run in snapshots[:1]:
                try:
                    self.cache.unpack(self.artifact(run, Artifact.SNAPSHOT), set(missing))
                except (CloudError, BadInputError):
                    pass   # no usable snapshot: download one by one
        self.cache.fetch_many(self.runs,
                              [(t.run_id, Artifact.FINGERPRINT, sha) for sha, t in missing.items()])

    def pack(self, tasks: Sequence[CloudTask]) -> dict[str, int | str]:
        """Write a snapshot of these (conforming) tasks: every fingerprint in one stored (uncompressed) zip, each
        member named by its SHA-256, as the artifact of a complete ``snapshot`` run."""
        tasks = [t for t in tasks if t.has_fingerprint]

        def write(path: Path) -> None:
            with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as snapshot:
                for sha in sorted({t.fingerprint_sha256 for t in tasks}):
                    snapshot.write(self.cache.path(sha, Artifact.FINGERPRINT), arcname=f"{sha}.npz")
        with self.runs.record(Kind.SNAPSHOT, {Tag.SNAPSHOT_TASKS: str(len(tasks)),
                                              Tag.CONTRIBUTOR: contributor()}) as run:
            sha = run.log_file(Artifact.SNAPSHOT, write)
        return {"run_id": run.run_id, "tasks": len(tasks), "sha256": sha}
