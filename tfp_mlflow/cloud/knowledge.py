"""Knowledge records: what was measured on a task, as rows of one kind (see docs/cloud-schema.md)."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field

from tfp_mlflow.cloud.schema import BASE_METRICS, KnowledgeKind
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.fingerprint import validate_task_name

__all__ = ["KnowledgeRow", "Knowledge", "MAX_ROWS"]

_TIMM_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
MAX_ROWS = 10_000


@dataclass(frozen=True)
class KnowledgeRow:
    """One measured result. Metrics lie in [0, 1]; which fields matter depends on the kind.

    ``architecture``: timm name (kind ``architecture``); ``source``: the source task of a transfer outcome;
    ``policy_id``: the policy (kinds ``policy`` and ``augmentation``); ``repetition``: seed index.
    """

    architecture: str = ""
    source: str = ""
    policy_id: str = ""
    repetition: int | None = None
    balanced_accuracy: float | None = None
    auroc: float | None = None
    evidence_run: str = ""

    def validate(self, kind: str) -> KnowledgeRow:
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
                "rows": [asdict(r) for r in self.rows],
                "policies": {k: self.policies[k] for k in sorted(self.policies)}}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]
