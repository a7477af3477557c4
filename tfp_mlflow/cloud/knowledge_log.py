"""The knowledge log: measured knowledge of the cloud's tasks, one complete run per table (:class:`KnowledgeLog`,
a part of :class:`~tfp_mlflow.cloud.store.Cloud`).

Contract (the "idempotent knowledge" and "isolation" clauses of :mod:`tfp_mlflow.cloud.base`): a table is
validated before anything is written; the same content by the same contributor is stored once; a table is read
within its size and row bounds before a single row becomes an object, and one that fails a check is quarantined,
never the error of a query. Torch-free.
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

from tfp_mlflow import _json
from tfp_mlflow.cloud.integrity import VerifiedArtifacts
from tfp_mlflow.cloud.knowledge import MAX_ROWS, Knowledge, KnowledgeRow, row_json
from tfp_mlflow.cloud.recorder import StoredRun
from tfp_mlflow.cloud.records import contributor as current_contributor
from tfp_mlflow.cloud.records import safe_file, short, validate_knowledge
from tfp_mlflow.cloud.runs import RunLog
from tfp_mlflow.cloud.schema import (
    KNOWLEDGE_KINDS,
    MAX_ROWS_PER_TARGET,
    OUTCOME_KINDS,
    Kind,
    Metric,
    Param,
    Tag,
    artifact_limit,
    sha256_tag,
)
from tfp_mlflow.errors import BadInputError, TamperedError
from tfp_mlflow.fingerprint import validate_task_name

__all__ = ["KnowledgeLog", "MAX_PARSED_ROWS", "table_rows"]

#: Rows of verified tables kept parsed in memory, shared by every cloud of the process (least recently read go).
MAX_PARSED_ROWS = 1_000_000


class _Parsed:
    """Verified knowledge tables already read, by run and recorded checksum: a complete run's table never changes,
    so the next query (and the next fit of the track record) reads only the tables added since."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows, self.rows = max_rows, 0
        self._tables: OrderedDict[tuple, Knowledge] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> Knowledge | None:
        with self._lock:
            knowledge = self._tables.get(key)
            if knowledge is not None:
                self._tables.move_to_end(key)
            return knowledge

    def put(self, key: tuple, knowledge: Knowledge) -> None:
        with self._lock:
            if key in self._tables or len(knowledge.rows) > self.max_rows:
                return
            self._tables[key] = knowledge
            self.rows += len(knowledge.rows)
            while self.rows > self.max_rows:
                _, dropped = self._tables.popitem(last=False)
                self.rows -= len(dropped.rows)


_PARSED = _Parsed(MAX_PARSED_ROWS)


def table_rows(run: StoredRun) -> int:
    """The rows a knowledge run recorded having (its ``rows`` param), read before its table; a full table when it
    recorded none or something else."""
    value = run.params.get(Param.ROWS, "")
    return int(value) if value.isdigit() and 0 < int(value) <= MAX_ROWS else MAX_ROWS


class KnowledgeLog:
    """Knowledge runs: written through the run log, read through the verified artifact reader."""

    def __init__(self, runs: RunLog, artifacts: VerifiedArtifacts) -> None:
        self.runs, self.artifacts = runs, artifacts

    def add_knowledge(self, knowledge: Knowledge, *, contributor: str | None = None) -> str:
        """Store one knowledge run (idempotent: returns the existing run id when the same contributor already
        stored the same content; another contributor's run with that content key is a different item)."""
        validate_knowledge(knowledge)
        key = knowledge.key()
        contributor = contributor or knowledge.contributor or current_contributor()
        for run in self.runs.find_runs(Kind.KNOWLEDGE, knowledge_key=key, contributor=contributor):
            return run.run_id
        if knowledge.kind in OUTCOME_KINDS:
            self._check_bound(knowledge, contributor)
        return self._write(knowledge, key, contributor)

    def add_knowledge_many(self, items: Sequence[Knowledge], *, contributor: str | None = None,
                           on_item: Callable[[Knowledge], None] | None = None) -> list[str]:
        """:meth:`add_knowledge` for many tables of one contributor, with one search for what it stored before
        instead of one per table: every table is validated before any is written; idempotent against what was
        stored when the call began."""
        for knowledge in items:
            validate_knowledge(knowledge)
        contributor = contributor or current_contributor()
        tasks = {knowledge.task for knowledge in items}
        stored = (self.runs.find_runs(Kind.KNOWLEDGE, contributor=contributor, task=next(iter(tasks)))
                  if len(tasks) == 1 else   # one task's tables: only its runs
                  self.runs.find_runs(Kind.KNOWLEDGE, contributor=contributor))
        keys = {run.tags.get(Tag.KNOWLEDGE_KEY, ""): run.run_id for run in stored}
        rows: dict[str, int] = {}
        for run in stored:
            if run.tags.get(Tag.KNOWLEDGE) in OUTCOME_KINDS:
                rows[run.tags.get(Tag.TASK, "")] = rows.get(run.tags.get(Tag.TASK, ""), 0) + table_rows(run)
        out = []
        for knowledge in items:
            key = knowledge.key()
            if key not in keys:
                if knowledge.kind in OUTCOME_KINDS:
                    self._refuse_beyond(knowledge, contributor, rows.get(knowledge.task, 0))
                    rows[knowledge.task] = rows.get(knowledge.task, 0) + len(knowledge.rows)
                keys[key] = self._write(knowledge, key, contributor)
            out.append(keys[key])
            if on_item is not None:
                on_item(knowledge)
        return out

    def _write(self, knowledge: Knowledge, key: str, contributor: str) -> str:
        tags = {Tag.TASK: knowledge.task, Tag.KNOWLEDGE: knowledge.kind, Tag.KNOWLEDGE_KEY: key,
                Tag.CONTRIBUTOR: contributor,
                Tag.PROVENANCE: short(knowledge.provenance, "provenance")}
        with self.runs.record(Kind.KNOWLEDGE, tags) as run:
            table = {"task": knowledge.task, "kind": knowledge.kind, "provenance": knowledge.provenance,
                     "rows": [row_json(r) for r in knowledge.rows]}
            # Compact JSON (indented, the encoder runs in Python: seconds for the reference's policies); each file
            # goes into the local cache as written, so this process reads it back without a download.
            files = {f"knowledge/{knowledge.kind}.json": json.dumps(table, sort_keys=True),
                     **{f"policy/{safe_file(pid)}.json": json.dumps(policy)
                        for pid, policy in sorted(knowledge.policies.items())}}
            for artifact_path, text in files.items():
                self.artifacts.cache.put(run.log_file(artifact_path, _writer(text)), artifact_path, text.encode())
            best = [r.balanced_accuracy for r in knowledge.rows if r.balanced_accuracy is not None]
            if best:
                run.log_metrics({Metric.BEST_BALANCED_ACCURACY: max(best)})
            run.log_params({Param.ROWS: len(knowledge.rows)})
        return run.run_id

    def _check_bound(self, knowledge: Knowledge, contributor: str) -> None:
        """Refuse an outcome or baseline table beyond the rows readers count of one account about one target."""
        written = sum(table_rows(run) for run in self.runs.find_runs(Kind.KNOWLEDGE, task=knowledge.task,
                                                                      contributor=contributor)
                      if run.tags.get(Tag.KNOWLEDGE) in OUTCOME_KINDS)
        self._refuse_beyond(knowledge, contributor, written)

    @staticmethod
    def _refuse_beyond(knowledge: Knowledge, contributor: str, written: int) -> None:
        if written + len(knowledge.rows) > MAX_ROWS_PER_TARGET:
            raise BadInputError(f"{contributor} already wrote {written:,} outcome and baseline rows about task "
                                f"{knowledge.task!r}; readers count at most {MAX_ROWS_PER_TARGET:,} per account and "
                                f"target, so these {len(knowledge.rows):,} were not written (measure another task)")

    def knowledge(self, task: str, kinds: Sequence[str] | None = None) -> list[Knowledge]:
        """Complete knowledge of a task (all kinds, or the given ones), oldest first."""
        runs = self.runs.find_runs(Kind.KNOWLEDGE, task=validate_task_name(task))
        out = []
        for run in reversed(runs):
            kind = run.tags.get(Tag.KNOWLEDGE, "")
            if kinds is not None and kind not in kinds:
                continue
            try:
                out.append(self._read_knowledge(run, task, kind))
            except (BadInputError, TamperedError) as exc:
                self.artifacts.quarantine("knowledge", run, str(exc), task=task)
        return out

    def knowledge_runs(self, kinds: Sequence[str]) -> list[StoredRun]:
        """The complete knowledge runs of the given kinds, of every task (newest first; one search per kind, not
        one per task): read each with :meth:`read_knowledge`."""
        return [run for kind in kinds for run in self.runs.find_runs(Kind.KNOWLEDGE, knowledge=kind)]

    def read_knowledge(self, run: StoredRun) -> Knowledge | None:
        """A run from :meth:`knowledge_runs` as :class:`Knowledge`, verified; ``None`` (and quarantined) when it
        fails a check."""
        tags = run.tags
        try:
            return self._read_knowledge(run, validate_task_name(tags.get(Tag.TASK, "")), tags.get(Tag.KNOWLEDGE, ""))
        except (BadInputError, TamperedError) as exc:
            self.artifacts.quarantine("knowledge", run, str(exc), task=tags.get(Tag.TASK, ""))
            return None

    def _read_knowledge(self, run: StoredRun, task: str, kind: str) -> Knowledge:
        """One knowledge run's table, verified and validated (what a contributor's ``validate_knowledge`` checks)."""
        if kind not in KNOWLEDGE_KINDS:
            raise BadInputError(f"knowledge kind {kind[:40]!r} is unknown")
        artifact = f"knowledge/{kind}.json"
        sha = run.tags.get(sha256_tag(artifact))
        key = (run.run_id, sha, task, kind, run.tags.get(Tag.CONTRIBUTOR, ""))
        known = _PARSED.get(key) if sha else None
        if known is not None:
            return known
        table = _json.loads(self.artifacts.artifact(run, artifact).read_bytes(), f"{artifact} of run {run.run_id}",
                            max_bytes=artifact_limit(artifact) or _json.MAX_JSON_BYTES)
        if not isinstance(table, dict) or not isinstance(table.get("rows"), list):
            raise BadInputError(f"{artifact} of run {run.run_id} is not a knowledge table")
        if len(table["rows"]) > MAX_ROWS:   # before a single row becomes an object
            raise BadInputError(f"{artifact} of run {run.run_id} has {len(table['rows']):,} rows; at most "
                                f"{MAX_ROWS:,} are accepted")
        fields = KnowledgeRow.__dataclass_fields__
        try:
            rows = tuple(KnowledgeRow(**{k: v for k, v in r.items() if k in fields}) for r in table["rows"])
        except (TypeError, AttributeError):
            raise BadInputError(f"{artifact} of run {run.run_id} holds rows that are not results") from None
        knowledge = Knowledge(task=task, kind=kind, rows=rows, run_id=run.run_id,
                              provenance=str(table.get("provenance", "")),
                              contributor=run.tags.get(Tag.CONTRIBUTOR, ""))
        validate_knowledge(knowledge)
        if sha:
            _PARSED.put(key, knowledge)
        return knowledge

    def policy(self, knowledge_run_id: str, policy_id: str) -> dict:
        """The albumentations JSON of a policy, as contributed (verified by the checksum its run recorded)."""
        artifact = f"policy/{safe_file(policy_id)}.json"
        policy = _json.loads(self.artifacts.artifact(self.runs.get_run(knowledge_run_id), artifact).read_bytes(),
                             f"{artifact} of run {knowledge_run_id}")
        if not isinstance(policy, dict):
            raise BadInputError(f"{artifact} of run {knowledge_run_id} is not an albumentations policy")
        return policy


def _writer(text: str) -> Callable[[Path], int]:
    """What :meth:`RunRecorder.log_file` calls to write ``text`` to its file."""
    return lambda path: path.write_text(text)
