"""Reading a contributor's results file (CSV or JSON) into knowledge of a task.

Columns (CSV header or JSON keys of a list of objects): ``kind`` (architecture, baseline, augmentation,
pretraining, cotraining, architecture_transfer; default architecture), ``architecture``, ``source``,
``policy_id``, ``repetition``, ``balanced_accuracy``, ``auroc``, ``run_id``. Metrics are fractions in [0, 1].
"""
from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from pathlib import Path

from tfp_mlflow.cloud.knowledge import Knowledge, KnowledgeRow
from tfp_mlflow.cloud.schema import KNOWLEDGE_KINDS, KnowledgeKind
from tfp_mlflow.errors import BadInputError

__all__ = ["read_results"]

_COLUMNS = {"kind", "architecture", "source", "policy_id", "repetition", "balanced_accuracy", "auroc", "run_id"}


def read_results(path: str | os.PathLike, task: str, *, provenance: str = "") -> list[Knowledge]:
    """One :class:`Knowledge` per kind found in the file; a one-line error names the file, row and problem."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"results file {str(path)!r} does not exist")
    try:
        if path.suffix.lower() == ".json":
            records = json.loads(path.read_text())
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise BadInputError("a JSON results file is a list of objects")
        else:
            with path.open(newline="") as handle:
                records = list(csv.DictReader(handle))
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as exc:
        raise BadInputError(f"results file {str(path)!r} cannot be parsed ({exc})") from None
    except BadInputError as exc:
        raise BadInputError(f"results file {str(path)!r}: {exc}") from None
    grouped: dict[str, list[KnowledgeRow]] = defaultdict(list)
    for number, record in enumerate(records, start=1):
        record = {str(k).strip().lower(): v for k, v in record.items() if k is not None}
        unknown = set(record) - _COLUMNS
        if unknown:
            raise BadInputError(f"results file {str(path)!r} has unknown columns {', '.join(sorted(unknown))}; "
                                f"use {', '.join(sorted(_COLUMNS))}")
        kind = (record.get("kind") or KnowledgeKind.ARCHITECTURE).strip()
        if kind not in KNOWLEDGE_KINDS or kind == KnowledgeKind.POLICY:
            raise BadInputError(f"results file {str(path)!r} row {number}: unknown kind {kind!r}")
        try:
            row = KnowledgeRow(architecture=str(record.get("architecture") or "").strip(),
                               source=str(record.get("source") or "").strip(),
                               policy_id=str(record.get("policy_id") or "").strip(),
                               repetition=_number(record.get("repetition"), int),
                               balanced_accuracy=_number(record.get("balanced_accuracy"), float),
                               auroc=_number(record.get("auroc"), float),
                               evidence_run=str(record.get("run_id") or "").strip()).validate(kind)
        except (BadInputError, ValueError) as exc:
            raise BadInputError(f"results file {str(path)!r} row {number}: {exc}") from None
        grouped[kind].append(row)
    if not grouped:
        raise BadInputError(f"results file {str(path)!r} holds no results")
    return [Knowledge(task=task, kind=kind, rows=tuple(rows), provenance=provenance)
            for kind, rows in grouped.items()]


def _number(value, cast):
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number = cast(value)
    if cast is float and number != number:
        raise ValueError("metric is NaN")
    return number
