"""What a recommendation is: :class:`Recommendation`, its :class:`RankedTask` rows, and per scenario a
:class:`ScenarioAdvice` of :class:`Suggestion` items, each with its evidence, its signal and its reasons.

One JSON form (:data:`RECOMMENDATION_SCHEMA`), written by :meth:`Recommendation.to_json` and read back by
:meth:`Recommendation.from_json`: what ``tfp recommend --json`` prints, the server's ``POST /tfp/api/recommend``
answers and ``tfp train --from-recommendation`` reads. Scenarios are reached through the registry
(:mod:`tfp_mlflow.scenarios`): a suggestion knows which kind of item it carries. Torch-free.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tfp_mlflow._version import __version__
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.scenarios import ITEM_ARCHITECTURE, ITEM_DATA, ITEM_POLICY, get_scenario

__all__ = ["ITEM_FIELDS", "RECOMMENDATION_SCHEMA", "RankedTask", "Recommendation", "ScenarioAdvice", "Suggestion"]

RECOMMENDATION_SCHEMA = "tfp.recommendation/1"

#: The fields a suggestion of each item kind carries beside the common ones (and its JSON keys).
ITEM_FIELDS: dict[str, tuple[str, ...]] = {
    ITEM_ARCHITECTURE: ("architecture", "balanced_accuracy", "auroc"),
    ITEM_POLICY: ("policy_id", "policy"),
    ITEM_DATA: ("data_uri", "num_images", "num_classes", "dataset"),
}
_COMMON = ("rank", "source", "distance", "signal", "flags", "contributor", "reasons")


@dataclass
class Suggestion:
    """One source's suggestion for one scenario: what it suggests (by its ``item`` kind), where it is in the
    ranking, why (``reasons``: distance rank, track record, evidence), and the runs behind it (``evidence``)."""

    item: str
    rank: int
    source: str
    distance: float
    signal: str = ""
    contributor: str = ""
    flags: list[str] = field(default_factory=list)
    reasons: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    # ITEM_ARCHITECTURE: the source's best architecture and what it measured there
    architecture: str | None = None
    balanced_accuracy: float | None = None
    auroc: float | None = None
    # ITEM_POLICY: the augmentation policy and where its albumentations JSON is stored
    policy_id: str | None = None
    policy: dict[str, str] | None = None
    # ITEM_DATA: the source's shareable data
    data_uri: str | None = None
    num_images: int | None = None
    num_classes: int | None = None
    #: A published study's source: its public dataset (``id``, ``name``, ``published``, ``url``), to download.
    dataset: dict[str, str] | None = None
    #: Set when another signal re-ordered the block (``{"score", "value"}``).
    transferability: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def what(self) -> str:
        """The suggested thing in words: an architecture, a policy id, or the source's data."""
        if self.item == ITEM_ARCHITECTURE:
            return self.architecture or "(not published)"
        if self.item == ITEM_POLICY:
            return self.policy_id or ""
        if self.data_uri:
            return self.data_uri
        if self.dataset:
            return f"{self.dataset['name']} (public: {self.dataset.get('url') or self.dataset.get('published')})"
        return "its data"

    def metric(self, name: str) -> float | None:
        """The value of a base metric (``balanced_accuracy``, ``auroc``) the suggestion carries."""
        return getattr(self, name, None)

    def to_json(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in (*_COMMON, *ITEM_FIELDS[self.item])}
        out["evidence"] = self.evidence
        if self.transferability is not None:
            out["transferability"] = self.transferability
        if self.notes:
            out["notes"] = self.notes
        return out

    @classmethod
    def from_json(cls, item: str, payload: dict[str, Any]) -> Suggestion:
        names = {f.name for f in fields(cls)} - {"item"}
        return cls(item=item, **{k: v for k, v in payload.items() if k in names})


@dataclass
class ScenarioAdvice:
    """One scenario's suggestions, best first, with the notes that explain gaps and the rule that ordered them."""

    selector: str
    items: list[Suggestion] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: ``track-record`` or ``distance`` (or a re-ranking signal's name).
    ordered_by: str = "distance"
    #: The validated rule (:class:`tfp_mlflow.selectors.track_record.Rule` as JSON), ``None`` without outcomes.
    rule: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"selector": self.selector, "items": [i.to_json() for i in self.items], "notes": self.notes,
                "ordered_by": self.ordered_by, "rule": self.rule}

    @classmethod
    def from_json(cls, scenario: str, payload: dict[str, Any]) -> ScenarioAdvice:
        item = get_scenario(scenario).item
        return cls(selector=payload.get("selector", ""),
                   items=[Suggestion.from_json(item, i) for i in payload.get("items", [])],
                   notes=list(payload.get("notes", [])), ordered_by=payload.get("ordered_by", "distance"),
                   rule=payload.get("rule"))


@dataclass
class RankedTask:
    """A row of the ranking: a cloud task, its distance and rank, and what the guard said of it."""

    rank: int
    source: str
    distance: float
    signal: str = ""
    num_images: int = 0
    domain: str = ""
    keywords: list[str] = field(default_factory=list)
    run_id: str = ""
    shareable: bool = False
    contributor: str = ""
    flags: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> RankedTask:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in names})


@dataclass
class Recommendation:
    """The answer to one query; :meth:`to_json` is the stable format of ``tfp recommend --json``."""

    target: dict[str, Any]
    selector: str
    top_k: int
    metric: str
    cloud: str
    ranking: list[RankedTask]
    scenarios: dict[str, ScenarioAdvice]
    run_id: str = ""
    notes: list[str] = field(default_factory=list)
    #: What the poisoning guard flagged: ``{"what": "task" | "knowledge", "source", "contributor", "reason", ...}``.
    flagged: list[dict[str, Any]] = field(default_factory=list)
    #: The ``--trusted`` contributor patterns (``None``: everyone).
    trusted: list[str] | None = None
    #: The commands that act on it (``tfp train ... --from-recommendation``, ``tfp tune ...``).
    next_steps: list[str] = field(default_factory=list)
    #: Runs every reader passes over, with the reason: a task whose fields do not parse, a fingerprint that does
    #: not conform, content whose checksum differs, a non-finite distance.
    quarantined: list[dict[str, Any]] = field(default_factory=list)

    def suggestions(self, scenario: str) -> list[Suggestion]:
        """The suggestions of one scenario (none when it was not asked for)."""
        advice = self.scenarios.get(get_scenario(scenario).name)
        return advice.items if advice is not None else []

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": RECOMMENDATION_SCHEMA, "tfp_version": __version__}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "ranking":
                value = [row.to_json() for row in value]
            elif f.name == "scenarios":
                value = {name: advice.to_json() for name, advice in value.items()}
            out[f.name] = value
        return out

    @classmethod
    def read(cls, value: Recommendation | dict[str, Any] | str | os.PathLike) -> Recommendation:
        """A recommendation from itself, its JSON form, or the file ``tfp recommend --json FILE`` wrote."""
        if isinstance(value, Recommendation):
            return value
        if not isinstance(value, dict):
            try:
                value = json.loads(Path(value).read_text())
            except (OSError, ValueError) as exc:
                raise BadInputError(f"cannot read the recommendation {str(value)!r} ({exc}); give the file "
                                    f"written by `tfp recommend --json FILE`") from None
        assert isinstance(value, dict)
        return cls.from_json(value)

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> Recommendation:
        """Read the stable JSON back (a file ``tfp recommend --json`` wrote, a server's answer)."""
        if not isinstance(payload, dict) or payload.get("schema") != RECOMMENDATION_SCHEMA:
            schema = payload.get("schema") if isinstance(payload, dict) else None
            raise BadInputError(f"not a tfp recommendation ({RECOMMENDATION_SCHEMA}, got schema {schema!r}); write "
                                f"one with `tfp recommend --json FILE` (and the same tfp-mlflow on both sides)")
        try:
            # What a reader needs is the scenarios; a trimmed file (hand-made, or a test's) may omit the rest.
            values: dict[str, Any] = {"target": {}, "selector": "", "top_k": 0, "metric": "balanced_accuracy",
                                      "cloud": ""}
            values.update({f.name: payload[f.name] for f in fields(cls) if f.name in payload})
            values["ranking"] = [RankedTask.from_json(r) for r in payload.get("ranking", [])]
            values["scenarios"] = {name: ScenarioAdvice.from_json(name, block)
                                   for name, block in payload.get("scenarios", {}).items()}
            return cls(**values)
        except (TypeError, AttributeError, KeyError) as exc:
            raise BadInputError(f"the recommendation does not parse ({type(exc).__name__}: {exc}); write it "
                                f"again with `tfp recommend --json FILE`") from None
