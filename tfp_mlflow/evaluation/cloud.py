"""Leave-one-out evaluation of selectors on a user's own cloud (``tfp evaluate --cloud``).

Every task of the cloud with a no-transfer baseline and transfer outcomes measured from at least two of its other
tasks is a target; the other tasks are its candidate sources. Each selector ranks, per target and scenario, only
the sources whose transfer to it was measured, so a team's partial knowledge scores selectors fairly, and the
result has the same form as the reference evaluation (win rates, gain curves, meta metrics, bootstrap ranks).
Torch-free: fingerprints come through the cloud's cache.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tfp_mlflow.cloud.base import KnowledgeStore
from tfp_mlflow.cloud.schema import BASE_METRICS, KnowledgeKind, Metric
from tfp_mlflow.cloud.store import CloudTask
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.prepared import prepared_sources
from tfp_mlflow.reference import Reference, ReferenceTask
from tfp_mlflow.scenarios import outcome_scenarios, scenario_names

__all__ = ["outcomes_from_cloud", "cloud_distance_matrices", "evaluate_cloud"]

_SCENARIO_OF_KIND = outcome_scenarios()


def outcomes_from_cloud(cloud: KnowledgeStore, tasks: Sequence[CloudTask] | None = None) -> Reference:
    """The cloud's transfer outcomes and baselines in the reference's form (targets: see the module doc).

    ``tasks`` restricts both targets and sources (default: every task of the cloud). A repetition without its own
    baseline is compared with the mean of the target's baselines.
    """
    tasks = list(cloud.conforming(cloud.tasks()) if tasks is None else tasks)
    names = {t.name for t in tasks}
    rows: dict[tuple[str, str], list[dict]] = {(s, m): [] for s in scenario_names() for m in BASE_METRICS}
    baselines: dict[str, dict[str, dict[int, float]]] = {m: {} for m in BASE_METRICS}
    for task in tasks:
        for knowledge in cloud.knowledge(task.name):
            scenario = _SCENARIO_OF_KIND.get(knowledge.kind)
            for row in knowledge.rows:
                repetition = int(row.repetition or 0)
                for metric in BASE_METRICS:
                    value = getattr(row, metric)
                    if value is None:
                        continue
                    if knowledge.kind == KnowledgeKind.BASELINE:
                        baselines[metric].setdefault(task.name, {})[repetition] = float(value)
                    elif scenario and row.source in names and row.source != task.name:
                        rows[(scenario, metric)].append({"r": repetition, "s": row.source, "t": task.name,
                                                         "p": float(value)})
    outcomes = {key: pd.DataFrame(value, columns=["r", "s", "t", "p"]) for key, value in rows.items()}
    measured_sources: dict[str, set[str]] = {}
    for (_, metric), table in outcomes.items():
        if metric == Metric.BALANCED_ACCURACY:
            for target, group in table.groupby("t"):
                measured_sources.setdefault(target, set()).update(group["s"])
    targets = sorted(t for t, sources in measured_sources.items()
                     if len(sources) >= 2 and t in baselines[Metric.BALANCED_ACCURACY])
    if not targets:
        raise BadInputError(f"no task of the cloud at {cloud.uri} has a baseline and transfer outcomes from two or "
                            f"more of its other tasks; contribute them with `tfp train --contribute` (the baseline "
                            f"and each scenario with --source)")
    repetitions = sorted({int(r) for table in outcomes.values() for r in table["r"]})
    frames = {}
    for metric in BASE_METRICS:
        frame = pd.DataFrame(index=repetitions, columns=targets, dtype=float)
        for target in targets:
            measured = baselines[metric].get(target, {})
            mean = float(np.mean(list(measured.values()))) if measured else math.nan
            frame[target] = [measured.get(r, mean) for r in repetitions]
        frames[(metric, True)] = frames[(metric, False)] = frame
    described = {t.name: ReferenceTask(name=t.name, keywords=t.keywords, num_images=t.num_images or 0,
                                       num_classes=t.num_classes or 0, domain=t.domain or "",
                                       dimensions=math.nan if t.intrinsic_dim is None else t.intrinsic_dim,
                                       dataset=t.name, imbalance_ratio=math.nan) for t in tasks}
    return Reference(root=Path("."), tasks=described, validation=targets,
                          development=[t for t in described if t not in targets], groups={}, shrink_map={},
                          outcomes=outcomes, baselines=frames)


def cloud_distance_matrices(cloud: KnowledgeStore, selectors: Sequence[str],
                            tasks: Sequence[CloudTask]) -> dict[str, pd.DataFrame]:
    """Each selector's distances between the given tasks (rows sources, columns targets)."""
    from tfp_mlflow.selectors import get_selector

    matrices = {}
    for name in selectors:
        selector = get_selector(name)
        prepared = (prepared_sources(cloud, selector, tasks) if selector.needs_fingerprint
                    else selector.prepare(cloud.as_tasks(tasks, with_fingerprints=False)))
        targets = cloud.as_tasks(tasks, with_fingerprints=selector.needs_fingerprint,
                                 variants=selector.variants or ("small",), moments=selector.needs_moments)
        names = [t.name for t in tasks]
        matrices[name] = pd.DataFrame(selector.matrix(prepared, targets), index=names, columns=names)
    return matrices


def evaluate_cloud(cloud: KnowledgeStore, selectors: Sequence[str] = ("manual", "bkld-small-target"), *,
                   top_k_shots: int = 3, bootstraps: int = 1000, seed: int = 0, group_out: bool = False,
                   matrix_dir: str | None = None):
    """Leave-one-out evaluation of ``selectors`` on the cloud's tasks that every one of them can rank.

    ``track-record`` among them is fitted from the cloud's own outcomes, strictly leave-one-target-out, combined
    with ``bkld-small-target`` where every task has a fingerprint, else with ``manual``.
    """
    from tfp_mlflow.evaluation.learned import write_matrices
    from tfp_mlflow.evaluation.protocol import evaluate
    from tfp_mlflow.selectors import get_selector
    from tfp_mlflow.selectors.track_record import TRACK_RECORD, Outcomes, TrackRecord

    if not selectors:
        raise BadInputError("nothing to evaluate: name at least one selector (--builtin)")
    registered = [s for s in selectors if s != TRACK_RECORD]
    needs_fingerprint = any(get_selector(s).needs_fingerprint for s in registered)
    # Quarantined tasks (cloud.quarantined()) are left out, like every reader does.
    tasks = [t for t in cloud.conforming(cloud.tasks()) if t.has_fingerprint or not needs_fingerprint]
    ref = outcomes_from_cloud(cloud, tasks)
    matrices: dict = cloud_distance_matrices(cloud, registered, tasks)
    if TRACK_RECORD in selectors:
        base = "bkld-small-target" if tasks and all(t.has_fingerprint for t in tasks) else "manual"
        distances = matrices.get(base)
        if distances is None:
            distances = cloud_distance_matrices(cloud, [base], tasks)[base]
        outcomes = Outcomes.from_records(_outcome_records(ref))
        model = TrackRecord(outcomes, [t.name for t in tasks], top_k=top_k_shots, group_out=group_out)
        matrices[TRACK_RECORD] = {s: model.matrix(s, distances, ref.validation) for s in scenario_names()}
        if matrix_dir:
            write_matrices(matrices[TRACK_RECORD], matrix_dir)
    matrices = {name: matrices[name] for name in selectors}
    return evaluate(ref, matrices, top_k_shots=top_k_shots, bootstraps=bootstraps, seed=seed, measured_only=True)


def _outcome_records(ref: Reference):
    """The cloud's outcomes (as :func:`outcomes_from_cloud` read them) as :class:`Outcomes` records."""
    for (scenario, metric), table in ref.outcomes.items():
        baselines = ref.baselines[(metric, True)]
        for row in table.itertuples(index=False):
            known = row.t in baselines.columns and int(row.r) in baselines.index
            yield {"scenario": scenario, "metric": metric, "r": int(row.r), "s": row.s, "t": row.t, "p": row.p,
                   "baseline": float(baselines.loc[int(row.r), row.t]) if known else math.nan}
