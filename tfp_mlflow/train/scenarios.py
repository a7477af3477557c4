"""How each scenario trains (the training hooks :class:`tfp_mlflow.scenarios.Scenario.training` names).

A hook says which heads the network has and which stages fit it. A stage is ``fit(task, cotrain, prefix=...,
pretraining=...)`` as :func:`tfp_mlflow.train.run.train` provides it: one Lightning fit whose metrics are logged
under ``prefix`` and whose best epoch's weights are kept.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from tfp_mlflow.errors import BadInputError
from tfp_mlflow.scenarios import BASELINE, get_scenario
from tfp_mlflow.train.data import TaskSplit
from tfp_mlflow.train.network import Network

__all__ = ["TrainingHook", "training_hook", "TARGET_ONLY", "PRETRAIN_THEN_FINETUNE", "COTRAIN"]

History = tuple[list[dict[str, float]], float]   # per-epoch metrics, steady-state images per second
Stage = Callable[..., History]


@dataclass(frozen=True)
class TrainingHook:
    """``heads(target, source)``: classes per head (head 0 is the target's once training ends);
    ``fit(stage, network, target, source)``: runs the stages, returns the target stage's history."""

    heads: Callable[[TaskSplit, TaskSplit | None], list[int]]
    fit: Callable[[Stage, Network, TaskSplit, TaskSplit | None], History]


def _source(source: TaskSplit | None) -> TaskSplit:
    if source is None:
        raise BadInputError("this scenario trains on a source task too: give --source-data")
    return source


def _pretrain_then_finetune(stage: Stage, network: Network, target: TaskSplit, source: TaskSplit | None) -> History:
    stage(_source(source), None, prefix="pretrain", pretraining=True)
    network.replace_head(0, len(target.classes))  # fine-tuning starts from a fresh head
    return stage(target, None, prefix="")


TARGET_ONLY = TrainingHook(heads=lambda target, source: [len(target.classes)],
                           fit=lambda stage, network, target, source: stage(target, None, prefix=""))
PRETRAIN_THEN_FINETUNE = TrainingHook(heads=lambda target, source: [len(_source(source).classes)],
                                      fit=_pretrain_then_finetune)
COTRAIN = TrainingHook(heads=lambda target, source: [len(target.classes), len(_source(source).classes)],
                       fit=lambda stage, network, target, source: stage(target, source, prefix=""))


def training_hook(scenario: str) -> TrainingHook:
    """The hook of a scenario (the baseline trains on the target alone)."""
    if scenario == BASELINE:
        return TARGET_ONLY
    module, _, attribute = get_scenario(scenario).training.partition(":")
    return getattr(importlib.import_module(module), attribute)
