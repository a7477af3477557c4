"""One scenario's advice: the ranking walked best-first until ``top_k`` sources with usable knowledge are found.

:class:`Walk` reads each source's knowledge once (what the trusted accounts wrote, less the results that contradict
the source's own baseline) and asks the scenario's item builder what it suggests: the best architecture by the
chosen metric, the policy that measured best, the shareable or public data. Sources at chance level, flagged by
the poisoning guard or without usable knowledge are passed over, and the notes say how many and why.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

from tfp_mlflow.cloud.base import KnowledgeStore
from tfp_mlflow.cloud.schema import KnowledgeKind, Metric
from tfp_mlflow.cloud.store import CloudTask
from tfp_mlflow.evidence import Ordering, describe
from tfp_mlflow.guard import Guard
from tfp_mlflow.noise import at_chance, noise_reason
from tfp_mlflow.public_datasets import public_dataset
from tfp_mlflow.recommendation import Recommendation, ScenarioAdvice, Suggestion
from tfp_mlflow.reference_import import REFERENCE_CONTRIBUTOR
from tfp_mlflow.scenarios import ITEM_ARCHITECTURE, ITEM_DATA, ITEM_POLICY

__all__ = ["Walk", "WALK_FACTOR", "AT_CHANCE"]

#: How far down the ranking a scenario looks for sources with usable knowledge.
WALK_FACTOR = 5


class Walk:
    """Walks an ordered ranking for one scenario at a time, reading each source's screened knowledge once."""

    def __init__(self, cloud: KnowledgeStore, guard: Guard, by_name: dict[str, CloudTask], signals: dict[str, str],
                 task_flags: dict[str, list[str]], result: Recommendation, metric: str, top_k: int,
                 include_flagged: bool) -> None:
        self.cloud, self.guard, self.by_name, self.signals = cloud, guard, by_name, signals
        self.task_flags, self.result, self.metric, self.top_k = task_flags, result, metric, top_k
        self.include_flagged = include_flagged
        self._knowledge: dict[str, list] = {}

    def knowledge(self, source: str) -> list:
        if source not in self._knowledge:
            trusted = [k for k in self.cloud.knowledge(source) if self.guard.trusts(k.contributor)]
            self._knowledge[source] = _screen_knowledge(source, trusted, self.guard, self.metric,
                                                        self.include_flagged, self.result.flagged)
        return self._knowledge[source]

    def scenario(self, scenario, ordering: Ordering, outcomes: int) -> ScenarioAdvice:
        """One scenario's advice: the first ``top_k`` sources with usable knowledge, and notes on what was not."""
        top_k, flagged = self.top_k, self.result.flagged
        items: list[Suggestion] = []
        skipped, passed_over, chance = 0, 0, 0
        rule, reasons, by_record = ordering.rule, ordering.reasons, ordering.by_record
        # Ordered by distance, the walk stays among the closest; ordered by record, it goes as far as it takes.
        walk = ordering.ranking if by_record else ordering.ranking[:WALK_FACTOR * top_k]
        for entry in walk:
            if len(items) == top_k:
                break
            if entry.name in self.task_flags and not self.include_flagged:
                passed_over += 1
                continue
            task = self.by_name[entry.name]
            item = _ITEMS[scenario.item](entry, task, partial(self.knowledge, entry.name), self.metric)
            if item is None or item == AT_CHANCE:
                skipped += item is None
                chance += item == AT_CHANCE
                continue
            assert isinstance(item, dict)
            flags = list(self.task_flags.get(entry.name, []))
            if self.include_flagged:  # flagged results were kept: mark the items built on them
                run = item["evidence"].get("knowledge_run")
                flags += [f["reason"] for f in flagged if f.get("knowledge_run") == run and run]
            items.append(Suggestion(item=scenario.item, rank=entry.rank, source=entry.name, distance=entry.distance,
                                    signal=self.signals[entry.name], flags=flags, contributor=task.contributor,
                                    reasons=reasons[entry.name], **item))
        # Where nothing measurably helped, that note comes first and the rule's (which did not order) is left out.
        described = None if ordering.notes else describe(rule, scenario.name, outcomes)
        notes = [*ordering.notes, *([described] if described else [])]
        if passed_over:
            notes.append(f"{passed_over} closer sources flagged by the poisoning guard were passed over "
                         f"(see flagged; --include-flagged uses them)")
        if len(items) < top_k and any(self.by_name[e.name].contributor.startswith("reference:") for e in walk):
            notes.append(scenario.reference_note)
        if skipped:
            notes.append(f"{skipped} closer sources had no usable {scenario.name} knowledge and were passed over")
        if chance:
            notes.append(f"{chance} closer sources measured only scores at chance level on their held-out split "
                         f"(within noise of guessing) and were passed over")
        if len(items) < top_k:
            notes.append(f"only {len(items)} of the {len(walk)} closest sources had usable {scenario.name} "
                         f"knowledge")
        return ScenarioAdvice(selector=self.result.selector, items=items, notes=notes,
                              ordered_by="track-record" if by_record else "distance",
                              rule=rule.to_json() if rule else None)


def _screen_knowledge(source: str, knowledge: list, guard: Guard, metric: str, include_flagged: bool,
                      flagged: list[dict[str, Any]]) -> list:
    """The source's knowledge less the results that contradict its baseline (recorded in ``flagged``)."""
    baselines = [getattr(r, metric) for k in knowledge if k.kind == KnowledgeKind.BASELINE for r in k.rows
                 if getattr(r, metric) is not None]
    screened = []
    for item in knowledge:
        if item.kind == KnowledgeKind.BASELINE:
            screened.append(item)
            continue
        rows = []
        for row in item.rows:
            reason = guard.knowledge_flag(getattr(row, metric, None), baselines)
            if reason is not None:
                flagged.append({"what": "knowledge", "source": source, "contributor": item.contributor,
                                "knowledge_run": item.run_id, "kind": item.kind, "reason": reason})
            if reason is None or include_flagged:
                rows.append(row)
        if rows:
            screened.append(replace(item, rows=tuple(rows)))
    return screened


def _architecture(entry, task, knowledge: Callable[[], list], metric) -> dict | str | None:
    rows = [(k, r) for k in knowledge() if k.kind == KnowledgeKind.ARCHITECTURE for r in k.rows
            if getattr(r, metric) is not None]
    if not rows:
        return None
    # A score that guessing would reach on its held-out split is no evidence for its architecture.
    rows = [(k, r) for k, r in rows if not at_chance(getattr(r, metric), metric, task.num_classes, r.held_out)]
    if not rows:
        return AT_CHANCE
    best_knowledge, best = max(rows, key=lambda kr: getattr(kr[1], metric))
    return {"architecture": best.architecture, "balanced_accuracy": best.balanced_accuracy, "auroc": best.auroc,
            "evidence": {"knowledge_run": best_knowledge.run_id, "training_run": best.evidence_run or None,
                         "candidates": len(rows), "provenance": best_knowledge.provenance,
                         "noise": noise_reason(getattr(best, metric), metric, task.num_classes, best.held_out)}}


def _augmentation(entry, task, knowledge: Callable[[], list], metric) -> dict | None:
    policies = [(k, r) for k in knowledge() if k.kind == KnowledgeKind.POLICY for r in k.rows]
    if not policies:
        return None
    # The policy that measured best on the source (a tuned one), else the first contributed (the published ones).
    measured = [(k, r) for k, r in policies if getattr(r, metric) is not None]
    chosen, row = max(measured, key=lambda kr: getattr(kr[1], metric)) if measured else policies[0]
    return {"policy_id": row.policy_id, "policy": {"knowledge_run": chosen.run_id,
                                                  "artifact": f"policy/{row.policy_id}.json"},
            "evidence": {"knowledge_run": chosen.run_id, "policies_available": len(policies),
                         "provenance": chosen.provenance, "repetition": row.repetition}}


def _shared_data(entry, task, knowledge: Callable[[], list], metric) -> dict | None:
    public = public_dataset(task.name) if task.contributor == REFERENCE_CONTRIBUTOR else None
    if (not task.shareable or not task.data_uri) and public is None:
        return None
    baselines = [r for k in knowledge() if k.kind == KnowledgeKind.BASELINE for r in k.rows]
    # The source's own baseline says how learnable its data is, unless it is at chance level.
    useful = [r for r in baselines if r.balanced_accuracy is not None
              and not at_chance(r.balanced_accuracy, Metric.BALANCED_ACCURACY, task.num_classes, r.held_out)]
    shared = task.shareable and bool(task.data_uri)
    return {"data_uri": task.data_uri if shared else None, "num_images": task.num_images,
            "num_classes": task.num_classes, "dataset": None if shared or public is None else public.to_json(),
            "evidence": {"task_run": task.run_id,
                         "source_baseline": useful[0].balanced_accuracy if useful else None,
                         "baseline_at_chance": bool(baselines) and not useful}}


#: What an item builder answers for a source whose only results are at chance level. Each builder reads the
#: source's knowledge (one search) only once the task itself could be suggested.
AT_CHANCE = "at chance"
_ITEMS = {ITEM_ARCHITECTURE: _architecture, ITEM_POLICY: _augmentation, ITEM_DATA: _shared_data}
