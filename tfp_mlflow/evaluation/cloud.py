"""Leave-one-out evaluation of selectors on a user's own cloud (``tfp evaluate --cloud``).

Every task of the cloud with a no-transfer baseline and transfer outcomes measured from at least two of its other
tasks is a target; the other tasks are its candidate sources. Each selector ranks, per target and scenario, only
the sources whose transfer to it was measured, so a team's partial knowledge scores selectors fairly, and the
result has the same form as the reference evaluation (win rates, gain curves, meta metrics, bootstrap ranks).
Torch-free: fingerprints come through the cloud's cache.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from tfp_mlflow.cloud.base import KnowledgeStore
from tfp_mlflow.cloud.schema import BASE_METRICS, Metric
from tfp_mlflow.cloud.store import CloudTask
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.evidence import cloud_outcomes
from tfp_mlflow.guard import Guard, parse_trusted
from tfp_mlflow.prepared import prepared_sources
from tfp_mlflow.reference import Reference, ReferenceTask
from tfp_mlflow.scenarios import scenario_names
from tfp_mlflow.selectors.outcomes import Outcomes

__all__ = ["outcomes_from_cloud", "cloud_distance_matrices", "evaluate_cloud"]


def outcomes_from_cloud(cloud: KnowledgeStore, tasks: Sequence[CloudTask] | None = None,
                        trusts: Callable[[str], bool] | None = None) -> Reference:
    """The cloud's transfer outcomes and baselines in the reference's form (targets: see the module doc).

    ``tasks`` restricts both targets and sources (default: every task of the cloud). Read by the rules every reader
    of outcomes follows (:func:`tfp_mlflow.evidence.cloud_outcomes`; ``trusts``: whose tables are read at all, as
    ``--trusted`` does for a recommendation): only the evidence that may speak about a task scores selectors on it.
    A repetition without its own baseline is compared with the mean of the target's baselines.
    """
    tasks = list(cloud.conforming(cloud.tasks()) if tasks is None else tasks)
    return _as_reference(cloud_outcomes(cloud, tasks, trusts), tasks, cloud.uri)


def _as_reference(measured_outcomes: Outcomes, tasks: Sequence[CloudTask], uri: str) -> Reference:
    table = measured_outcomes.table
    table = table[table["s"] != table["t"]]
    measured = table[(table["metric"] == Metric.BALANCED_ACCURACY) & table["baseline"].notna()]
    sources = measured.groupby("t")["s"].nunique() if len(measured) else pd.Series(dtype=int)
    targets = sorted(t for t, count in sources.items() if count >= 2)
    if not targets:
        raise BadInputError(f"no task of the cloud at {uri} has a baseline and transfer outcomes from two or "
                            f"more of its other tasks; contribute them with `tfp train --contribute` (the baseline "
                            f"and each scenario with --source)")
    outcomes = {(scenario, metric): table[(table["scenario"] == scenario) & (table["metric"] == metric)][
        ["r", "s", "t", "p"]].reset_index(drop=True) for scenario in scenario_names() for metric in BASE_METRICS}
    repetitions = sorted({int(r) for r in table["r"]})
    frames = {}
    for metric in BASE_METRICS:
        known = table[(table["metric"] == metric) & table["baseline"].notna()].groupby(["t", "r"])["baseline"].first()
        frame = pd.DataFrame(index=repetitions, columns=targets, dtype=float)
        for target in targets:
            measured_baselines = known[target] if target in known.index.get_level_values(0) else pd.Series()
            mean = float(measured_baselines.mean()) if len(measured_baselines) else math.nan
            frame[target] = [float(measured_baselines.get(r, mean)) for r in repetitions]
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
                   matrix_dir: str | None = None, trusted: str | Sequence[str] | None = None):
    """Leave-one-out evaluation of ``selectors`` on the cloud's tasks that every one of them can rank.

    ``track-record`` among them is fitted from the cloud's own outcomes, strictly leave-one-target-out, combined
    with ``bkld-small-target`` where every task has a fingerprint, else with ``manual``. ``trusted``
    (``"alice,reference:*"``) reads only those contributors' tables, and counts all of theirs (an account's tables
    about its own sources on its own targets otherwise count through two targets per source).
    """
    from tfp_mlflow.evaluation.learned import track_record_matrices, write_matrices
    from tfp_mlflow.evaluation.protocol import evaluate
    from tfp_mlflow.selectors import DISTANCE, get_selector, selector_kind
    from tfp_mlflow.selectors.track_record import TRACK_RECORD

    if not selectors:
        raise BadInputError("nothing to evaluate: name at least one selector (--builtin)")
    registered = [s for s in selectors if selector_kind(s) == DISTANCE]   # the rest are fitted from the outcomes
    needs_fingerprint = any(get_selector(s).needs_fingerprint for s in registered)
    # Quarantined tasks (cloud.quarantined()) are left out, like every reader does.
    tasks = [t for t in cloud.conforming(cloud.tasks()) if t.has_fingerprint or not needs_fingerprint]
    trusted_patterns = parse_trusted(trusted)
    outcomes = cloud_outcomes(cloud, tasks, Guard(trusted=trusted_patterns).trusts if trusted_patterns else None)
    ref = _as_reference(outcomes, tasks, cloud.uri)
    matrices: dict = cloud_distance_matrices(cloud, registered, tasks)
    if TRACK_RECORD in selectors:
        base = "bkld-small-target" if tasks and all(t.has_fingerprint for t in tasks) else "manual"
        distances = matrices.get(base)
        if distances is None:
            distances = cloud_distance_matrices(cloud, [base], tasks)[base]
        matrices[TRACK_RECORD] = track_record_matrices(ref, distances, outcomes=outcomes, group_out=group_out,
                                                       top_k=top_k_shots)
        if matrix_dir:
            write_matrices(matrices[TRACK_RECORD], matrix_dir)
    matrices = {name: matrices[name] for name in selectors}
    return evaluate(ref, matrices, top_k_shots=top_k_shots, bootstraps=bootstraps, seed=seed, measured_only=True)
