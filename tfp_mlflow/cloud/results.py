"""Reading a contributor's results file (CSV or JSON) into knowledge of a task.

Columns (CSV header or JSON keys of a list of objects): ``kind`` (architecture, baseline, augmentation,
pretraining, cotraining, architecture_transfer; default architecture), ``architecture``, ``source``,
``policy_id``, ``repetition``, ``balanced_accuracy``, ``auroc``, ``run_id``, ``held_out`` (images the metrics were
measured on). Metrics are fractions in [0, 1].
"""
from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from pathlib import Path

from tfp_mlflow import _json
from tfp_mlflow.cloud.knowledge import MAX_ROWS, Knowledge, KnowledgeRow
from tfp_mlflow.cloud.schema import KNOWLEDGE_KINDS, KnowledgeKind
from tfp_mlflow.errors import BadInputError

__all__ = ["read_results"]

MAX_RESULTS_BYTES = 64 * 2**20
_COLUMNS = {"kind", "architecture", "source", "policy_id", "repetition", "balanced_accuracy", "auroc", "run_id",
            "held_out"}


def read_results(path: str | os.PathLike, task: str, *, provenance: str = "") -> list[Knowledge]:
    """One :class:`Knowledge` per kind found in the file; a one-line error names the file, row and problem."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"results file {str(path)!r} does not exist")
    if path.stat().st_size > MAX_RESULTS_BYTES:
        raise BadInputError(f"results file {str(path)!r} is larger than {MAX_RESULTS_BYTES // 2**20} MiB")
    try:
        if path.suffix.lower() == ".json":
            records = _json.loads(path.read_bytes(), f"results file {str(path)!r}")
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise BadInputError("a JSON results file is a list of objects")
        else:
            with path.open(newline="", encoding="utf-8") as handle:
                records = list(csv.DictReader(handle))
    except UnicodeDecodeError as exc:
        raise BadInputError(f"results file {str(path)!r} is not UTF-8 text (byte {exc.start}); save it as "
                            f"UTF-8") from None
    except csv.Error as exc:
        raise BadInputError(f"results file {str(path)!r} cannot be parsed ({exc})") from None
    except BadInputError as exc:
        message = str(exc)
        raise BadInputError(message if message.startswith("results file") else
                            f"results file {str(path)!r}: {message}") from None
    if len(records) > MAX_ROWS:
        raise BadInputError(f"results file {str(path)!r} holds {len(records):,} rows; at most {MAX_ROWS:,}")
    grouped: dict[str, list[KnowledgeRow]] = defaultdict(list)
    for number, record in enumerate(records, start=1):
        record = {str(k).strip().lower(): v for k, v in record.items() if k is not None}
        unknown = set(record) - _COLUMNS
        if unknown:
            raise BadInputError(f"results file {str(path)!r} has unknown columns {', '.join(sorted(unknown))}; "
                                f"use {', '.join(sorted(_COLUMNS))}")
        kind = record.get("kind") or KnowledgeKind.ARCHITECTURE
        if not isinstance(kind, str):
            raise BadInputError(f"results file {str(path)!r} row {number}: kind must be a name such as "
                                f"architecture, got {type(kind).__name__}")
        kind = kind.strip()
        if kind not in KNOWLEDGE_KINDS or kind == KnowledgeKind.POLICY:
            raise BadInputError(f"results file {str(path)!r} row {number}: unknown kind {kind!r}")
        try:
            row = KnowledgeRow(architecture=str(record.get("architecture") or "").strip(),
                               source=str(record.get("source") or "").strip(),
                               policy_id=str(record.get("policy_id") or "").strip(),
                               repetition=_number(record.get("repetition"), int),
                               balanced_accuracy=_number(record.get("balanced_accuracy"), float),
                               auroc=_number(record.get("auroc"), float),
                               evidence_run=str(record.get("run_id") or "").strip(),
                               held_out=_number(record.get("held_out"), int, "held_out")).validate(kind)
        except (BadInputError, ValueError, TypeError, OverflowError) as exc:
            raise BadInputError(f"results file {str(path)!r} row {number}: {exc}") from None
        grouped[kind].append(row)
    if not grouped:
        raise BadInputError(f"results file {str(path)!r} holds no results")
    return [Knowledge(task=task, kind=kind, rows=tuple(rows), provenance=provenance)
            for kind, rows in grouped.items()]


def _number(value, cast, name: str = "repetition"):
    """A number from a CSV cell or a JSON value; a one-line reason for anything else."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{value!r:.40} is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r:.40} is not a finite number")
    if cast is int:
        if number != int(number) or abs(number) > 10**9:
            raise ValueError(f"{name} {value!r:.40} is not a small whole number")
        return int(number)
    return number
