"""The warm start of a study: the recommender's top-k suggestions as the first trials.

Per rank i <= k, the architecture suggested at rank i goes with the policy suggested at rank i; the learning rate,
weight decay and truncation of the training run that measured the architecture are reused where they lie inside
the search space (the search starts where the similar task ended), else the middle of each range. Every enqueued
value must lie inside the space: otherwise it is an error, or, with ``widen``, the space grows to hold it (Optuna
itself would only warn). Each enqueued trial's ``user_attrs`` name its sources, selector, distances and rank.
"""
from __future__ import annotations

import math
from typing import Any

import optuna

from tfp_mlflow.cloud.base import KnowledgeStore
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.recommendation import Recommendation, Suggestion
from tfp_mlflow.scenarios import ITEM_ARCHITECTURE, ITEM_POLICY, list_scenarios
from tfp_mlflow.tune.space import BUDGETS, NO_POLICY, SearchSpace

__all__ = ["warm_start_suggestions", "evidence_params", "enqueue_warm_start"]


def warm_start_suggestions(recommendation: Recommendation | dict[str, Any], space: SearchSpace, top_k: int,
                           evidence: dict[str, dict[str, str]] | None = None) -> list[dict[str, Any]]:
    """Per rank i <= k: the architecture and policy suggested at rank i, with the numeric values that went with them.

    ``evidence`` maps a training run id to its MLflow params: when the architecture suggestion names the run that
    measured it, its learning rate, weight decay and truncation are reused where they lie inside the space (the
    search starts where the similar task ended); otherwise the middle of each range (geometric mean) is used, and
    the middle choice of searched epochs and image sizes.
    Returns ``[{"params": ..., "user_attrs": ...}]``; a rank without an architecture suggestion keeps the space's
    first architecture, one without a policy uses ``none``.
    """
    evidence = evidence or {}
    recommendation = Recommendation.read(recommendation)
    architectures = [i for i in _items(recommendation, ITEM_ARCHITECTURE) if i.architecture]
    policies = _items(recommendation, ITEM_POLICY)
    out = []
    for rank in range(min(top_k, max(len(architectures), len(policies)))):
        arch = architectures[rank] if rank < len(architectures) else None
        policy = policies[rank] if rank < len(policies) else None
        measured_run = (arch.evidence.get("training_run") or "") if arch else ""
        measured = evidence.get(measured_run, {})
        params = {"architecture": arch.architecture if arch else space.architectures[0],
                  "policy": policy.policy_id if policy else NO_POLICY,
                  "lr": _inside(measured.get("lr"), space.lr),
                  "weight_decay": _inside(measured.get("weight_decay"), space.weight_decay),
                  "truncate": _truncation(measured.get("truncation"), space.truncate),
                  **{name: _choice(measured.get(name), getattr(space, name))
                     for name in BUDGETS if name in space.searched}}
        attrs = {"warm_start": True, "rank": rank + 1, "selector": recommendation.selector,
                 "recommendation_run": recommendation.run_id,
                 "architecture_source": arch.source if arch else "",
                 "architecture_distance": arch.distance if arch else None,
                 "policy_source": policy.source if policy else "",
                 "policy_distance": policy.distance if policy else None,
                 "numeric_from": measured_run if measured else ""}
        out.append({"params": params, "user_attrs": attrs})
    return out


def evidence_params(cloud: KnowledgeStore,
                    recommendation: Recommendation | dict[str, Any]) -> dict[str, dict[str, str]]:
    """MLflow params of the training runs behind the architecture suggestions (those still in the cloud)."""
    out = {}
    for item in _items(Recommendation.read(recommendation), ITEM_ARCHITECTURE):
        run_id = item.evidence.get("training_run")
        if run_id and run_id not in out:
            try:
                out[run_id] = cloud.get_run(run_id).params
            except Exception:  # a run recorded elsewhere (another server): fall back to the middle of the ranges
                continue
    return out


def _items(recommendation: Recommendation, kind: str) -> list[Suggestion]:
    """The suggestions of the (first) scenario whose items are of ``kind`` (through the registry)."""
    for scenario in list_scenarios():
        if scenario.item == kind and scenario.name in recommendation.scenarios:
            return recommendation.suggestions(scenario.name)
    return []


def _inside(value: str | None, bounds: tuple[float, float]) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    return number if bounds[0] <= number <= bounds[1] else math.sqrt(bounds[0] * bounds[1])


def _choice(value: str | None, choices: tuple[int, ...]) -> int:
    try:
        number = int(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = -1
    return number if number in choices else choices[(len(choices) - 1) // 2]


def _truncation(value: str | None, choices: tuple[int | None, ...]):
    measured = None if value in (None, "", "None") else int(value)
    return measured if measured in choices else choices[0]


def enqueue_warm_start(study: optuna.Study, suggestions: list[dict[str, Any]], space: SearchSpace, *,
                       widen: bool = False) -> SearchSpace:
    """Enqueue the suggestions; returns the space (widened when ``widen`` and a suggestion lay outside)."""
    for suggestion in suggestions:
        problems = space.violations(suggestion["params"])
        if problems and not widen:
            attrs = suggestion["user_attrs"]
            raise BadInputError(f"warm-start suggestion {attrs['rank']} (from "
                                f"{attrs['architecture_source'] or attrs['policy_source']}) is outside the search "
                                f"space: {problems[0]}; add it to the space file or pass --widen")
        if problems:
            space = space.widened(suggestion["params"])
    for suggestion in suggestions:
        study.enqueue_trial(suggestion["params"], user_attrs=suggestion["user_attrs"], skip_if_exists=True)
    return space
