"""A warm start from whole studies: the nearest tasks' finished studies shape the new one (docs/method.md §9).

Enqueuing the top-k recommended configurations transfers a handful of points; a source task's *study* says where
its whole search went well. :func:`source_studies` reads the finished studies of the tasks a recommendation ranks
(every trial of each, from the ``study.json`` its parent run keeps in the cloud, whatever storage it ran in), and
:class:`StudyTransferSampler` proposes, for the new study's early trials, configurations from those studies' best
quantile, choosing a source with probability proportional to its weight: its position in the recommender's
ranking (learned or distance, whichever ordered the recommendation). TPE does the rest.

It follows the idea of task-similarity-weighted meta-learning for TPE (Watanabe, Awad, Onishi and Hutter, IJCAI
2023, the paper behind optunahub's ``MetaLearnTPESampler``) and the meta-learned initial design of Feurer,
Springenberg and Hutter (AAAI 2015), through Optuna's public sampler API only: TPE's densities are not reachable
there, so the sources act through proposals, not through the densities. A source can mislead (a dissimilar task
whose best region is poor here): every finished trial proposed from a source that scores below the median of the
new study's own trials halves that source's weight, and the share of proposals decays with every trial the new
study finishes, so a misleading source costs a few trials, never the search. Each trial records which source study
shaped it (``transfer_from``; ``origin``).
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from tfp_mlflow._compat.optuna import enqueued
from tfp_mlflow.cloud.base import KnowledgeStore
from tfp_mlflow.cloud.schema import TUNING_EXPERIMENT, Artifact, Kind, Tag
from tfp_mlflow.errors import TfpError
from tfp_mlflow.guard import Guard, parse_trusted
from tfp_mlflow.recommendation import Recommendation

__all__ = ["SourceStudy", "StudyTransferSampler", "source_studies", "TRANSFERS"]

#: ``top-k``: enqueue the recommendation's top-k configurations; ``studies``: also learn from the nearest tasks'
#: whole studies (:class:`StudyTransferSampler`).
TRANSFERS = ("top-k", "studies")


@dataclass(frozen=True)
class SourceStudy:
    """A finished study of a source task: its finished trials (``params``, ``value``), best first, and its weight."""

    task: str
    study: str
    weight: float
    trials: tuple[tuple[dict[str, Any], float], ...] = field(default=())


def source_studies(cloud: KnowledgeStore, recommendation: Recommendation | dict, *, target: str,
                   limit: int = 5) -> list[SourceStudy]:
    """The finished studies of the tasks ``recommendation`` ranks, nearest first (at most ``limit`` tasks with one),
    weighted ``1 / rank`` among them and normalised. The target's own studies are not sources; unreadable ones are
    skipped.

    Only studies the query may trust are read: written (``mlflow.user``, which a ``tfp-basic-auth`` server sets to
    the authenticated account) by an account the recommendation's ``trusted`` patterns name, or, without them, by
    the source task's own contributor: a study about a task is its owner's evidence. Of a task's readable studies the
    one with the most finished trials is used; a writer's start time never decides.
    """
    recommendation = Recommendation.read(recommendation)
    guard = Guard(trusted=parse_trusted(recommendation.trusted))
    found: list[tuple[int, str, str, list]] = []
    for entry in recommendation.ranking:
        if len(found) == limit:
            break
        if entry.source == target:
            continue
        best: tuple[int, str, str, list] | None = None
        for run in cloud.find_runs(Kind.STUDY, experiment=TUNING_EXPERIMENT, task=entry.source):
            writer = run.tags.get(Tag.MLFLOW_USER, "")
            if not (guard.trusts(writer) if guard.trusted else writer == entry.contributor):
                continue
            trials = _finished_trials(cloud, run)
            if trials and (best is None or (len(trials), run.run_id) > (len(best[3]), best[1])):
                best = (entry.rank, run.run_id, trials[0][2], [t[:2] for t in trials])
        if best is not None:
            found.append((best[0], entry.source, best[2], best[3]))
    total = sum(1.0 / rank for rank, *_ in found)
    return [SourceStudy(task, study, (1.0 / rank) / total, tuple(sorted(trials, key=lambda t: -t[1])))
            for rank, task, study, trials in found]


def _finished_trials(cloud: KnowledgeStore, run) -> list[tuple[dict[str, Any], float, str]]:
    """A study run's finished trials as ``(params, value, study name)``; none when its record cannot be read."""
    try:
        record = json.loads(cloud.read_artifact(run, Artifact.STUDY))
        name = str(record.get("study_name", ""))
        return [(dict(t["params"]), float(t["value"]), name) for t in record.get("trials", [])
                if t.get("state") == TrialState.COMPLETE.name and t.get("value") is not None
                and math.isfinite(float(t["value"]))]
    except (TfpError, ValueError, KeyError, TypeError, AttributeError):
        return []


class StudyTransferSampler(optuna.samplers.BaseSampler):
    """Proposals from source studies for the early trials, ``base`` (TPE) for the rest; see the module doc.

    Parameters
    ----------
    sources : sequence of SourceStudy
    base : BaseSampler, optional
        Samples everything the sources do not (default: ``TPESampler(seed=seed)``).
    quantile : float
        The share of each source's trials (best first) that proposals come from.
    prior_trials : float
        How fast proposals give way: the chance of a proposal at the new study's n-th own finished trial is
        ``share * sum(weights) * prior_trials / (prior_trials + n)``.
    penalty : float
        What a source's weight is multiplied by when a trial it proposed scored below the median of the trials the
        base sampler chose.
    share : float
        The chance of a proposal at the first trial (the rest is the base sampler's, so a source is always judged
        against what the study finds without it).
    """

    def __init__(self, sources: Sequence[SourceStudy], *, base: optuna.samplers.BaseSampler | None = None,
                 seed: int | None = None, quantile: float = 0.25, prior_trials: float = 4.0,
                 penalty: float = 0.5, share: float = 0.75) -> None:
        self._sources = [s for s in sources if s.trials]
        self._weights = np.array([s.weight for s in self._sources], dtype=float)
        self._base = base or optuna.samplers.TPESampler(seed=seed)
        self._rng = np.random.default_rng(seed)
        self._quantile, self._prior, self._penalty, self._share = quantile, prior_trials, penalty, share
        self._chosen: dict[int, tuple[int, dict[str, Any]]] = {}

    # -- what a trial records ----------------------------------------------------------------------------------
    def origin(self, number: int) -> dict[str, Any] | None:
        """Which source study shaped trial ``number`` (``None``: the base sampler alone)."""
        chosen = self._chosen.get(number)
        if chosen is None:
            return None
        source = self._sources[chosen[0]]
        return {"task": source.task, "study": source.study, "weight": round(float(self._weights[chosen[0]]), 4)}

    def weights(self) -> dict[str, float]:
        """Each source task's current weight."""
        return {s.task: float(w) for s, w in zip(self._sources, self._weights)}

    # -- the sampler API ---------------------------------------------------------------------------------------
    def reseed_rng(self) -> None:
        self._base.reseed_rng()
        self._rng = np.random.default_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._base.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if trial.number in self._chosen:
            return {}          # the proposal answers in sample_independent
        return self._base.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        chosen = self._chosen.get(trial.number)
        if chosen is not None:
            value = _inside(chosen[1].get(param_name), param_distribution)
            if value is not None:
                return value
        return self._base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._base.before_trial(study, trial)
        if not len(self._sources) or enqueued(trial):   # an enqueued trial keeps its own
            return
        own = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        chance = self._share * float(self._weights.sum()) * self._prior / (self._prior + own)
        if self._rng.random() >= chance:
            return
        index = int(self._rng.choice(len(self._sources), p=self._weights / self._weights.sum()))
        trials = self._sources[index].trials
        best = trials[:max(1, int(math.ceil(self._quantile * len(trials))))]
        seen = [t.params for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        fresh = [params for params, _ in best if params not in seen]
        if fresh:
            self._chosen[trial.number] = (index, fresh[int(self._rng.integers(len(fresh)))])

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        chosen = self._chosen.get(trial.number)
        if chosen is not None and state == TrialState.COMPLETE and values:
            # Against the trials the base sampler chose itself: a source is judged by what the study finds alone.
            others = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                      if t.number not in self._chosen and t.value is not None]
            direction = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
            if others and direction * values[0] < direction * float(np.median(others)):
                self._weights[chosen[0]] *= self._penalty   # this source's region is worse than the study's own
        elif chosen is not None and state != TrialState.COMPLETE:
            self._weights[chosen[0]] *= self._penalty
        self._base.after_trial(study, trial, state, values)


def _inside(value: Any, distribution: BaseDistribution) -> Any:
    """``value`` when ``distribution`` can hold it (a float kept within the bounds), else ``None``."""
    if value is None:
        return None
    if isinstance(distribution, CategoricalDistribution):
        return value if value in distribution.choices else None
    if isinstance(distribution, (FloatDistribution, IntDistribution)):
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        if not distribution.low <= number <= distribution.high:
            return None
        return int(number) if isinstance(distribution, IntDistribution) else number
    return None
