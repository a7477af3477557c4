"""Knowledge records: what was measured on a task, as rows of one kind (see docs/cloud-schema.md)."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field

from tfp_mlflow.cloud.schema import BASE_METRICS, KnowledgeKind
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.fingerprint import validate_task_name

__all__ = ["KnowledgeRow", "Knowledge", "MAX_ROWS", "row_json"]

_TIMM_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
MAX_ROWS = 10_000


@dataclass(frozen=True)
class KnowledgeRow:
    """One measured result. Metrics lie in [0, 1]; which fields matter depends on the kind.

    ``architecture``: timm name (kind ``architecture``); ``source``: the source task of a transfer outcome;
    ``policy_id``: the policy (kinds ``policy`` and ``augmentation``); ``repetition``: seed index; ``held_out``:
    how many images the metrics were measured on (what says whether a score is at chance or a gain within noise,
    :mod:`tfp_mlflow.noise`; unknown for the published study).
    """

    architecture: str = ""
    source: str = ""
    policy_id: str = ""
    repetition: int | None = None
    balanced_accuracy: float | None = None
    auroc: float | None = None
    evidence_run: str = ""
    held_out: int | None = None

    def validate(self, kind: str) -> KnowledgeRow:
        if self.held_out is not None and (isinstance(self.held_out, bool) or not isinstance(self.held_out, int)
                                          or not 1 <= self.held_out <= 10**9):
            raise BadInputError(f"{kind} result held_out={self.held_out!r} is not a count of images; give the "
                                f"size of the held-out split or leave it out")
        for name in BASE_METRICS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0):
                raise BadInputError(f"{kind} result {name}={value!r} is outside [0, 1]; give metrics as fractions")
        if kind == KnowledgeKind.ARCHITECTURE and not _TIMM_NAME.match(self.architecture or ""):
            raise BadInputError(f"architecture result needs a timm model name, got {self.architecture!r}")
        if kind in (KnowledgeKind.PRETRAINING, KnowledgeKind.COTRAINING, KnowledgeKind.AUGMENTATION,
                    KnowledgeKind.ARCHITECTURE_TRANSFER):
            validate_task_name(self.source)
        if kind != KnowledgeKind.POLICY and self.balanced_accuracy is None and self.auroc is None:
            raise BadInputError(f"{kind} result has no metric; give balanced_accuracy and/or auroc")
        return self


def row_json(row: KnowledgeRow) -> dict:
    """A row as stored: every field, less an unknown held-out size (so rows written before it existed keep
    their content hash)."""
    out = asdict(row)
    if out["held_out"] is None:
        del out["held_out"]
    return out


@dataclass(frozen=True)
class Knowledge:
    """A knowledge run: rows of one kind for one task, with provenance."""

    task: str
    kind: str
    rows: tuple[KnowledgeRow, ...]
    run_id: str = ""
    provenance: str = ""
    contributor: str = ""
    policies: dict[str, dict] = field(default_factory=dict)

    def key(self) -> str:
        """Content hash: the same knowledge contributed twice is stored once."""
        body = {"task": self.task, "kind": self.kind, "provenance": self.provenance,
                "rows": [row_json(r) for r in self.rows],
                "policies": {k: self.policies[k] for k in sorted(self.policies)}}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]
