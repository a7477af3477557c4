"""Load the reference (the published 71-task study) into a cloud: tasks without fingerprints, their transfer outcomes,
baselines and augmentation policies, each with its provenance.

Idempotent: knowledge is deduplicated by content and a task whose description is unchanged is not re-contributed,
so a second import writes nothing. The architecture experiment gives, per (source, target), the target's outcome
with the source's best architecture but not that architecture's timm name: it is imported as
``architecture_transfer`` knowledge, and no ``architecture`` knowledge (which needs a name) is invented.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pandas as pd

from tfp_mlflow.cloud.base import KnowledgeStore
from tfp_mlflow.cloud.knowledge import Knowledge, KnowledgeRow
from tfp_mlflow.cloud.schema import BASE_METRICS, KnowledgeKind
from tfp_mlflow.reference import STUDY, Reference
from tfp_mlflow.scenarios import list_scenarios, scenario_names

__all__ = ["import_reference", "REFERENCE_CONTRIBUTOR"]

REFERENCE_CONTRIBUTOR = "reference:godau2024"


def import_reference(cloud: KnowledgeStore, ref: Reference,
                     on_task: Callable[[str], None] | None = None) -> dict[str, int]:
    """Import every task of the reference with its knowledge; returns counts of what was written or already there."""
    transfers = _transfer_tables(ref)
    policies = ref.policy_files()
    counts = {"tasks": 0, "tasks_unchanged": 0, "knowledge": 0}
    known = {t.name: t for t in cloud.tasks()}               # one read of the task list, not one per task
    for name, task in ref.tasks.items():
        tables = []
        for scenario in list_scenarios():
            rows = transfers[scenario.name].get(name)
            if rows is not None:
                tables.append(Knowledge(name, scenario.outcome, rows, provenance=_provenance(name, ref, scenario.name)))
        baseline = _baseline_rows(ref, name)
        if baseline:
            tables.append(Knowledge(name, KnowledgeKind.BASELINE, baseline,
                                    provenance=_provenance(name, ref, "baseline")))
        task_policies = {f"{name}-rep{r}": json.loads(path.read_text())
                         for (task_name, r), path in sorted(policies.items()) if task_name == name}
        if task_policies:
            tables.append(Knowledge(name, KnowledgeKind.POLICY, tuple(
                KnowledgeRow(policy_id=pid, repetition=int(pid.rsplit("rep", 1)[1])) for pid in task_policies),
                policies=task_policies, provenance=f"{STUDY}; Faster-AutoAugment policy, albumentations 1.3.0"))
        # One search for what the reference stored about this task before, not one (or two) per table.
        cloud.add_knowledge_many(tables, contributor=REFERENCE_CONTRIBUTOR)
        counts["knowledge"] += len(tables)
        existing = known.get(name)
        described = dict(keywords=task.keywords, domain=task.domain, num_images=task.num_images,
                         num_classes=task.num_classes, intrinsic_dim=task.dimensions)
        if existing is not None and (existing.keywords, existing.domain, existing.num_images, existing.num_classes,
                                     existing.intrinsic_dim) == tuple(described.values()):
            counts["tasks_unchanged"] += 1
        else:
            cloud.contribute(None, name=name, contributor=REFERENCE_CONTRIBUTOR, keywords=task.keywords,
                             domain=task.domain, num_images=task.num_images, num_classes=task.num_classes,
                             intrinsic_dim=task.dimensions)
            counts["tasks"] += 1
        if on_task:
            on_task(name)
    return counts


def _provenance(task: str, ref: Reference, scenario: str) -> str:
    shrunk = ref.shrink_map.get(task, task) != task
    role = "validation" if task in ref.validation else "development"
    return (f"{STUDY}; {scenario} experiment, {role} target" +
            ("; target shrunk to 800 training samples" if shrunk else "") + "; repetitions 0-2")


def _transfer_tables(ref: Reference) -> dict[str, dict[str, tuple[KnowledgeRow, ...]]]:
    """Per scenario, per target: rows (source, repetition, BA, AUROC) from the validation and development files."""
    out: dict[str, dict[str, tuple[KnowledgeRow, ...]]] = {}
    for scenario in scenario_names():
        frames = []
        for metric in BASE_METRICS:
            table = ref.outcomes[(scenario, metric)].copy()
            development = ref.development_outcomes(scenario, metric)
            table = pd.concat([table, development]) if development is not None else table
            frames.append(table.groupby(["r", "s", "t"])["p"].mean().rename(metric))
        joined = pd.concat(frames, axis=1).reset_index()
        out[scenario] = {
            target: tuple(KnowledgeRow(source=row.s, repetition=int(row.r),
                                       balanced_accuracy=_metric(row.balanced_accuracy), auroc=_metric(row.auroc))
                          for row in group.sort_values(["s", "r"]).itertuples())
            for target, group in joined.groupby("t")}
    return out


def _baseline_rows(ref: Reference, task: str) -> tuple[KnowledgeRow, ...]:
    rows = []
    for repetition in ref.repetitions:
        values: dict[str, Any] = {}
        for metric in BASE_METRICS:
            value = ref.baseline_or_none(task, metric, repetition)
            if value is not None:
                values[metric] = value
        if values:
            rows.append(KnowledgeRow(repetition=repetition, **values))
    return tuple(rows)


def _metric(value) -> float | None:
    return None if pd.isna(value) else min(1.0, max(0.0, float(value)))
