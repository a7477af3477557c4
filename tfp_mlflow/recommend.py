"""From a ranking of the cloud's tasks to per-scenario recommendations with their evidence (docs/method.md §5).

The query's options are checked, the candidates gathered (trusted tasks, the poisoning guard's flags), ranked by
the selector (merged with keywords where both are given) and ordered per scenario by the evidence (distance or the
track record); :mod:`tfp_mlflow.advice` then walks each scenario's order for ``top_k`` sources with usable
knowledge. Every item names its source, distance, rank and the runs behind it; every list names the selector.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from tfp_mlflow.advice import Walk
from tfp_mlflow.cloud.base import KnowledgeStore
from tfp_mlflow.cloud.schema import (
    BASE_METRICS,
    RECOMMENDATION_EXPERIMENT,
    Artifact,
    Kind,
    Metric,
    Param,
    Tag,
)
from tfp_mlflow.cloud.store import CloudTask
from tfp_mlflow.errors import ArtifactsOnServerError, BadInputError, SpecMismatchError
from tfp_mlflow.evidence import ORDERS, fit_track_record, order
from tfp_mlflow.fingerprint import Fingerprint, validate_keywords
from tfp_mlflow.guard import Guard, fingerprint_stats, parse_trusted
from tfp_mlflow.keywords import match_keywords, vocabulary
from tfp_mlflow.prepared import prepared_sources
from tfp_mlflow.ranking import DEFAULT_MERGE_RULE, RankedSource, merge_rankings, rank_sources
from tfp_mlflow.recommendation import RECOMMENDATION_SCHEMA, RankedTask, Recommendation, Suggestion
from tfp_mlflow.scenarios import ITEM_ARCHITECTURE, get_scenario, scenario_names
from tfp_mlflow.selectors import DEFAULT_SELECTOR, get_selector
from tfp_mlflow.task import Task

__all__ = ["QueryOptions", "Recommendation", "recommend", "check_options", "check_query", "RECOMMENDATION_SCHEMA"]


def check_query(selector: str, keywords: Sequence[str], *, has_target: bool) -> None:
    """What a selector needs of the query: a fingerprint selector the target's fingerprint, ``manual`` keywords."""
    if get_selector(selector).needs_fingerprint:
        if not has_target:
            raise BadInputError(f"selector {selector!r} needs the target's fingerprint; give a fingerprint or data, "
                                f"or use --selector manual with --keywords")
    elif not keywords:
        raise BadInputError("the manual selector ranks by keywords; give the new task's --keywords "
                            "(modality, anatomy, what is labelled: --keywords chest,x-ray)")


def recommend(cloud: KnowledgeStore, target: Fingerprint | None = None, *, keywords: Sequence[str] = (),
              name: str | None = None, selector: str = DEFAULT_SELECTOR, top_k: int = 3,
              scenarios: Sequence[str] | None = None, metric: str = Metric.BALANCED_ACCURACY,
              log: bool = True, rerank: Callable[[list[Suggestion]], tuple[str, list[Suggestion]]] | None = None,
              trusted: str | Sequence[str] | None = None, include_flagged: bool = False,
              merge: str | None = DEFAULT_MERGE_RULE, order_by: str = "auto") -> Recommendation:
    """Rank the cloud's tasks for ``target`` and recommend, per scenario, what worked on the closest ones.

    Parameters
    ----------
    target : Fingerprint, optional
        The new task's fingerprint; without one, only the ``manual`` selector can rank (give ``keywords``).
    keywords : sequence of str
        The new task's keywords (override the fingerprint's).
    log : bool
        Also log the recommendation as a run in the ``tfp-recommendations`` experiment.
    rerank : callable, optional
        ``rerank(architecture_items) -> (signal, items)``: re-orders the architecture suggestions by another signal
        (a transferability score on the target's images, :func:`tfp_mlflow.extract.probe.transferability_reranker`);
        each block says in ``ordered_by`` which signal ordered it.
    trusted : str or sequence of str, optional
        Contributor patterns (``fnmatch``; ``"alice,reference:*"``): only their tasks and knowledge are used.
    include_flagged : bool
        Use sources and results the poisoning guard flagged (they stay marked); by default they are passed over.
        See :mod:`tfp_mlflow.guard`.
    merge : str or None
        On a mixed cloud, with a fingerprint selector, the target's fingerprint and its keywords: tasks known only by
        keywords are ranked by ``manual`` and merged into the fingerprint ranking by this rule
        (:data:`tfp_mlflow.ranking.MERGE_RULES`; ``None`` leaves them out). Each entry names its ``signal``.
    order_by : str
        ``"auto"``: per scenario, the sources' measured track record orders the suggestions where it validated
        better than distance on the cloud's other targets (:mod:`tfp_mlflow.evidence`); ``"distance"``: distance
        alone. Either way every suggestion carries its ``reasons`` (distance, rank, track record, evidence).
    """
    scenario_list, chooser, guard, keywords = _checked(selector, scenarios, metric, top_k, order_by, trusted,
                                                      keywords, target)
    target_name = name or (target.name if target else "query")
    notes: list[str] = []
    pool = _candidates(cloud, chooser, guard, target, target_name, keywords, merge, notes)
    keywords = _on_vocabulary(keywords, pool, notes, by_keywords_alone=not chooser.needs_fingerprint)
    query = Task(name=target_name, keywords=keywords, num_images=target.num_images if target else 0,
                 fingerprint=target)
    ranking, signals = _rank(cloud, chooser, query, pool, merge)
    task_flags = _screen_fingerprints(cloud, guard, pool.tasks, pool.untrusted, notes)
    result = Recommendation(
        target={"name": target_name, "keywords": list(keywords),
                "spec_id": target.spec_id if target else None,
                "num_images": target.num_images if target else None},
        selector=selector, top_k=top_k, metric=metric, cloud=cloud.uri,
        ranking=[_ranked(r, pool.by_name[r.name], task_flags, signals[r.name]) for r in ranking[:max(10, top_k)]],
        scenarios={}, notes=notes, trusted=list(guard.trusted) if guard.trusted else None)
    result.flagged = [{"what": "task", "source": name, "contributor": pool.by_name[name].contributor,
                       "reason": reason}
                      for name in sorted(task_flags) if name in pool.by_name for reason in task_flags[name]]
    evidence = fit_track_record(cloud, [*pool.tasks, *pool.described], guard.trusts if guard.trusted else None,
                                selector if chooser.needs_fingerprint and not pool.described else "manual")
    if evidence is None:
        notes.append("the cloud holds no measured transfer outcomes yet: suggestions are ordered by distance "
                     "(`tfp train --contribute --source`, `tfp seed --transfer` add them)")
    elif evidence.ignored:
        notes.append(f"{evidence.ignored} outcome or baseline tables were not counted: written about a task by an "
                     f"account its owner did not name (`tfp contribute --measured-by`), or over an account's bounds")
    walk = Walk(cloud, guard, pool.by_name, signals, task_flags, result, metric, top_k, include_flagged)
    for scenario in scenario_list:
        advice = walk.scenario(scenario, order(evidence, scenario.name, target_name, ranking, order_by),
                               evidence.outcomes if evidence else 0)
        if scenario.item == ITEM_ARCHITECTURE and rerank is not None and advice.items:
            advice.ordered_by, advice.items = rerank(advice.items)
            advice.notes.append(f"re-ordered by {advice.ordered_by} on the target's images (the sources' "
                                f"distances found the candidates)")
        result.scenarios[scenario.name] = advice
    result.quarantined = cloud.quarantined()
    if result.quarantined:
        notes.append(f"{len(result.quarantined)} runs failed a check and were left out (see quarantined)")
    if log:
        try:
            result.run_id = _log(cloud, result)
        except ArtifactsOnServerError as exc:   # the answer stands; only its record could not be written here
            notes.append(f"not logged as a run: {exc}")
    return result


@dataclass(frozen=True)
class QueryOptions:
    """How a query ranks and what it answers, as one value from the command line, a recipe or the server's form to
    :func:`recommend` (its keyword parameters of the same names), so no option is dropped on the way.

    ``scenarios`` ``None``: every registered scenario. See :func:`recommend` for each field.
    """

    selector: str = DEFAULT_SELECTOR
    top_k: int = 3
    scenarios: tuple[str, ...] | None = None
    metric: str = Metric.BALANCED_ACCURACY
    trusted: str | tuple[str, ...] | None = None
    include_flagged: bool = False
    merge: str | None = DEFAULT_MERGE_RULE
    order_by: str = "auto"

    def check(self) -> list:
        """:func:`check_options` on these options: their scenarios, or a one-line error."""
        return check_options(selector=self.selector, top_k=self.top_k, metric=self.metric, order_by=self.order_by,
                             scenarios=self.scenarios)

    def as_kwargs(self) -> dict[str, Any]:
        """The options as :func:`recommend`'s keyword arguments."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def check_options(*, selector: str, top_k: int, metric: str, order_by: str = "auto",
                  scenarios: Sequence[str] | None = None) -> list:
    """A query's options, checked before any cloud is opened or image drawn; returns its scenarios."""
    if order_by not in ORDERS:
        raise BadInputError(f"--order must be one of {', '.join(ORDERS)}, got {order_by!r}")
    if top_k < 1:
        raise BadInputError(f"--top-k must be at least 1, got {top_k}")
    if metric not in BASE_METRICS:
        raise BadInputError(f"--metric must be balanced_accuracy or auroc, got {metric!r}")
    get_selector(selector)
    return [get_scenario(s) for s in (scenario_names() if scenarios is None else scenarios)]


def _checked(selector: str, scenarios: Sequence[str] | None, metric: str, top_k: int, order_by: str,
             trusted: str | Sequence[str] | None, keywords: Sequence[str], target: Fingerprint | None):
    """The query's parameters checked before the cloud is read: ``(scenarios, selector, guard, keywords)``."""
    scenario_list = check_options(selector=selector, top_k=top_k, metric=metric, order_by=order_by,
                                  scenarios=scenarios)
    chooser = get_selector(selector)
    guard = Guard(trusted=parse_trusted(trusted))
    keywords = validate_keywords(list(keywords) or list(target.keywords if target else ()))
    check_query(selector, keywords, has_target=target is not None)
    return scenario_list, chooser, guard, keywords


@dataclass(frozen=True)
class _Pool:
    """The cloud tasks a query ranks: by the selector (``tasks``), by keywords merged in (``described``), and the
    tasks left out as untrusted (they still count in the guard's population)."""

    tasks: list[CloudTask]
    described: list[CloudTask]
    untrusted: list[CloudTask]

    @property
    def by_name(self) -> dict[str, CloudTask]:
        return {t.name: t for t in [*self.tasks, *self.described]}


def _candidates(cloud: KnowledgeStore, chooser, guard: Guard, target: Fingerprint | None, target_name: str,
                keywords: Sequence[str], merge: str | None, notes: list[str]) -> _Pool:
    """The tasks the query may rank (notes say what was left out and why); a one-line error when there are none.

    Tasks whose runs or fingerprints fail a check are quarantined: left out of every query, never its error. Trust
    is per run: the newest version by a trusted contributor, whoever wrote a newer one."""
    selector = chooser.name
    every = cloud.conforming([t for t in cloud.tasks() if t.name != target_name])
    cloud_tasks = (cloud.conforming([t for t in cloud.tasks(trusts=guard.trusts) if t.name != target_name])
                   if guard.trusted else every)
    described: list[CloudTask] = []
    trusted_names = {t.name for t in cloud_tasks}
    untrusted = [t for t in every if t.name not in trusted_names]
    if untrusted:
        notes.append(f"{len(untrusted)} tasks by contributors outside --trusted were left out")
    if chooser.needs_fingerprint:
        spec_id = cloud.spec_id()
        if target is not None and spec_id is not None and target.spec_id != spec_id:
            raise SpecMismatchError(f"the target has spec {target.spec_id} but the cloud at {cloud.uri} uses "
                                    f"{spec_id}; fingerprint it with the cloud's spec")
        without = [t for t in cloud_tasks if not t.has_fingerprint]
        cloud_tasks = [t for t in cloud_tasks if t.has_fingerprint]
        if without and merge and keywords and target is not None and cloud_tasks:
            described = without
            notes.append(f"{len(described)} tasks known only by keywords were ranked by manual and merged with the "
                         f"{selector} ranking ({merge}; each entry's signal says which placed it)")
        elif without:
            notes.append(f"{len(without)} tasks without a fingerprint cannot be ranked by {selector} "
                         f"(give the new task's --keywords to rank them by keywords beside it)")
    if not cloud_tasks:
        raise BadInputError(f"the cloud at {cloud.uri} holds no task that {selector} can rank"
                            + (" from a trusted contributor; widen --trusted" if untrusted else
                               "; contribute tasks first (`tfp contribute`)"))
    return _Pool(cloud_tasks, described, untrusted)


def _on_vocabulary(keywords: Sequence[str], pool: _Pool, notes: list[str], *,
                   by_keywords_alone: bool) -> tuple[str, ...]:
    """The query's keywords in the words the pool's tasks use (``fundus`` → ``fundus_photography``); notes say
    what was mapped, name a keyword that matches nothing with its nearest terms, and that a ranking by keywords
    alone does not use the images. When keywords are the query's only signal and none matches, a one-line error:
    any order would be arbitrary."""
    if by_keywords_alone:
        notes.append("ranked by keywords alone (manual): the cloud's suggestions do not use the new task's images, so "
                     "two datasets with the same keywords get the same answer")
    if not keywords or not (by_keywords_alone or pool.described):
        return tuple(keywords)
    match = match_keywords(keywords, vocabulary(t.keywords for t in [*pool.tasks, *pool.described]))
    if by_keywords_alone and match.unmatched and len(match.unmatched) == len(keywords):
        near = sorted({term for terms in match.unmatched.values() for term in terms})
        raise BadInputError(f"no known task has the keyword{'s' if len(keywords) > 1 else ''} "
                            f"{', '.join(map(repr, keywords))}, and keywords are this query's only signal, so any "
                            f"order would be arbitrary"
                            + (f" (nearest terms: {', '.join(near)})" if near else "")
                            + "; `tfp keywords` lists the cloud's words, or give the data to rank by its fingerprint")
    notes.extend(match.notes())
    if match.unmatched:
        notes.append(f"{len(match.unmatched)} of the {len(keywords)} keywords match no known task: they move no "
                     f"ranking, and no scenario's suggestions reflect them")
    return match.keywords


def _rank(cloud: KnowledgeStore, chooser, query: Task, pool: _Pool,
          merge: str | None) -> tuple[list[RankedSource], dict[str, str]]:
    """The pool ranked for the query, and which signal placed each source (the selector, or ``manual``)."""
    selector = chooser.name
    # Fingerprint selectors read a cached, prepared stack (rebuilt only when the cloud changed).
    sources = (prepared_sources(cloud, chooser, pool.tasks) if chooser.needs_fingerprint
               else cloud.as_tasks(pool.tasks, with_fingerprints=False))
    ranking = _finite(cloud, rank_sources(chooser, query, sources), pool.by_name, selector)
    signals = dict.fromkeys((r.name for r in ranking), selector)
    if pool.described:
        by_keywords = rank_sources("manual", query, cloud.as_tasks(pool.described, with_fingerprints=False))
        signals.update(dict.fromkeys((r.name for r in by_keywords), "manual"))
        entries = {r.name: r for r in [*ranking, *by_keywords]}
        merged = merge_rankings([(r.name, r.distance) for r in ranking], [(r.name, r.distance) for r in by_keywords],
                                merge or DEFAULT_MERGE_RULE)
        ranking = [replace(entries[name], rank=rank) for rank, (name, _) in enumerate(merged, start=1)]
    return ranking, signals


def _finite(cloud: KnowledgeStore, ranking: list[RankedSource], by_name: dict[str, CloudTask],
            selector: str) -> list[RankedSource]:
    """The ranking less sources at a non-finite distance (quarantined: a fingerprint that passed every check
    can still be degenerate for one selector), renumbered."""
    bad = [r for r in ranking if not math.isfinite(r.distance)]
    for entry in bad:
        cloud.quarantine("fingerprint", by_name[entry.name],
                          f"its {selector} distance to the target is {entry.distance}", task=entry.name)
    if not bad:
        return ranking
    return [replace(r, rank=rank) for rank, r in enumerate((r for r in ranking if math.isfinite(r.distance)), 1)]


def _ranked(entry: RankedSource, task: CloudTask, task_flags: dict[str, list[str]], signal: str) -> RankedTask:
    return RankedTask(rank=entry.rank, source=entry.name, distance=entry.distance, signal=signal,
                      num_images=entry.num_images, domain=task.domain, keywords=list(task.keywords),
                      run_id=task.run_id, shareable=task.shareable, contributor=task.contributor,
                      flags=task_flags.get(entry.name, []))


def _screen_fingerprints(cloud: KnowledgeStore, guard: Guard, tasks: Sequence[CloudTask],
                         untrusted: Sequence[CloudTask], notes: list[str]) -> dict[str, list[str]]:
    """The guard's reasons per flagged task (the untrusted tasks count in the population, never as reference)."""
    everyone = [*tasks, *untrusted]
    stats = fingerprint_stats(cloud, everyone)
    if not stats:
        return {}
    flags, note = guard.fingerprint_flags(stats, {t.name: t.contributor for t in everyone})
    if note:
        notes.append(f"poisoning guard: {note}")
    return flags


def _log(cloud: KnowledgeStore, result: Recommendation) -> str:
    from tfp_mlflow.plots import plot_ranking

    tags = {Tag.TARGET: result.target["name"], Tag.SELECTOR: result.selector}
    with cloud.record(Kind.RECOMMENDATION, tags, experiment=RECOMMENDATION_EXPERIMENT) as run:
        result.run_id = run.run_id
        run.log_params({Param.SELECTOR: result.selector, Param.TOP_K: result.top_k, Param.METRIC: result.metric,
                        Param.TARGET: result.target["name"]})
        shown = result.ranking[:10]
        if shown:
            run.log_metrics({Metric.BEST_DISTANCE: shown[0].distance})
        run.log_file(Artifact.RECOMMENDATION, lambda p: p.write_text(json.dumps(result.to_json(), indent=1,
                                                                                sort_keys=True)))
        if shown:
            run.log_file(Artifact.RANKING_PLOT, lambda p: plot_ranking(
                [r.source for r in shown], [r.distance for r in shown], p,
                title=f"closest tasks to {result.target['name']} ({result.selector})"))
    return run.run_id
