"""What a cloud's measured outcomes say about its sources, for a recommendation (docs/method.md §8).

:func:`fit_track_record` reads the transfer outcomes and baselines of a cloud's tasks (trusted contributors only)
and fits the ``track-record`` selector once per cloud version (the set of knowledge runs it read); :func:`order`
then decides, per scenario, whether the record or distance orders the candidates: the rule that validated better
on the cloud's other targets, never reading the query's own outcomes. Each candidate gets its reasons: how close
(distance and rank), how reliable (improved N of M targets, median gain) and how much evidence backs that.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd

from tfp_mlflow._threads import thread_map
from tfp_mlflow.cloud.base import KnowledgeStore
from tfp_mlflow.cloud.knowledge_log import table_rows
from tfp_mlflow.cloud.recorder import StoredRun
from tfp_mlflow.cloud.records import contributor as current_contributor
from tfp_mlflow.cloud.schema import (
    BASE_METRICS,
    MAX_ROWS_PER_ACCOUNT,
    MAX_ROWS_PER_TARGET,
    OUTCOME_KINDS,
    KnowledgeKind,
    Tag,
)
from tfp_mlflow.cloud.store import CloudTask
from tfp_mlflow.prepared import prepared_sources
from tfp_mlflow.ranking import RankedSource
from tfp_mlflow.scenarios import outcome_scenarios
from tfp_mlflow.selectors import JoinedSources, fit_selector, get_selector
from tfp_mlflow.selectors.track_record import MIN_EFFECT, TRACK_RECORD, Outcomes, Rule, TrackRecord

__all__ = ["ORDERS", "NEAR", "MAX_ROWS_PER_ACCOUNT", "MAX_ROWS_PER_TARGET", "OUTCOME_KINDS", "REFERENCE_PREFIX",
           "CloudEvidence", "Ordering", "admissible", "cloud_outcomes", "fit_track_record", "order"]

#: ``auto``: per scenario, the rule that wins on the cloud's evidence; ``distance``: the ranking as it is.
ORDERS = ("auto", "distance")
#: The query's nearest targets whose records a suggestion shows when the rule reads no neighbourhood.
NEAR = 20
_KINDS = outcome_scenarios()
#: The published reference's contributor (``reference:<study>``), imported by the cloud's owner.
REFERENCE_PREFIX = "reference:"
_FITTED: dict[tuple, CloudEvidence] = {}
_LOCK = threading.Lock()


@dataclass
class CloudEvidence:
    """A fitted ``track-record`` model of one cloud version and the distances its rules were validated with."""

    model: TrackRecord
    affinities: pd.DataFrame
    signal: str
    outcomes: int
    #: Knowledge runs left out: about another account's task (unnamed by its owner), or over an account's bounds.
    ignored: int = 0


def fit_track_record(cloud: KnowledgeStore, tasks: Sequence[CloudTask], trusts: Callable[[str], bool] | None = None,
                     selector: str = "manual") -> CloudEvidence | None:
    """The cloud's outcomes as a fitted model (``None`` when the cloud holds none); cached per cloud version.

    ``selector`` gives the distances between the cloud's tasks that the inner validation combines with:
    a fingerprint selector where every task with outcomes has a fingerprint, else ``manual`` (keywords).
    ``trusts`` (the query's ``--trusted``) picks whose knowledge is read at all; of that, only what
    :func:`admissible` lets speak about a task counts.
    """
    names = {t.name: t for t in tasks}
    # One search per kind for the whole cloud; the fitted model is reused while the same runs back it.
    runs, ignored = _admitted(cloud, names, trusts)
    if not any(run.tags.get(Tag.KNOWLEDGE) in _KINDS for run in runs):
        return None
    writers = {run.tags.get(Tag.CONTRIBUTOR, "") for run in runs}
    key = (cloud.uri, selector, tuple(sorted(run.run_id for run in runs)), tuple(sorted(names)),
           current_contributor(), tuple(sorted(w for w in writers if trusts is not None and trusts(w))))
    with _LOCK:
        if key in _FITTED:
            return _FITTED[key]
    outcomes = _read(cloud, runs, names, trusts)
    if not len(outcomes.table):
        return None
    targets = [names[t] for t in sorted(set(outcomes.table["t"])) if t in names]
    chooser = get_selector(selector)
    if chooser.needs_fingerprint and not all(t.has_fingerprint for t in [*targets, *tasks]):
        selector, chooser = "manual", get_selector("manual")
    affinities = _affinities(cloud, selector, tasks, targets)
    fitted = CloudEvidence(fit_selector(TRACK_RECORD, outcomes, [t.name for t in tasks]), affinities, selector,
                           len(outcomes.table), ignored)
    with _LOCK:
        if len(_FITTED) > 8:
            _FITTED.clear()
        _FITTED[key] = fitted
    return fitted


def cloud_outcomes(cloud: KnowledgeStore, tasks: Sequence[CloudTask],
                   trusts: Callable[[str], bool] | None = None) -> Outcomes:
    """The transfer outcomes (with their baselines) about ``tasks`` that may speak about them: what the track
    record learns from and what ``tfp evaluate --cloud`` scores selectors on, read by the same rules
    (:func:`admissible`, then the self-dealing bound of :func:`_records`)."""
    names = {t.name: t for t in tasks}
    return _read(cloud, _admitted(cloud, names, trusts)[0], names, trusts)


def _admitted(cloud: KnowledgeStore, names: Mapping[str, CloudTask],
              trusts: Callable[[str], bool] | None) -> tuple[list[StoredRun], int]:
    """The baseline and outcome runs about ``names`` that :func:`admissible` lets speak, and how many it left out."""
    return admissible(cloud.knowledge_runs([KnowledgeKind.BASELINE, *_KINDS]), names, trusts)


def _read(cloud: KnowledgeStore, runs: Sequence[StoredRun], names: Mapping[str, CloudTask],
          trusts: Callable[[str], bool] | None) -> Outcomes:
    return _records(filter(None, thread_map(cloud.read_knowledge, runs)), names,
                    trusted=(lambda account: trusts is not None and trusts(account)))


#: Affinity columns of targets already computed, per cloud, selector and source set, for a selector without a
#: prepared stack (``manual``); fingerprint selectors keep theirs with each prepared part (see :func:`_affinities`).
_COLUMNS: dict[tuple, dict[tuple, np.ndarray]] = {}


def _affinities(cloud: KnowledgeStore, selector: str, tasks: Sequence[CloudTask],
                targets: Sequence[CloudTask]) -> pd.DataFrame:
    """``-distance`` from every task (rows) to every target (columns).

    Each column is computed once per prepared part of the sources (:mod:`tfp_mlflow.prepared`) and kept with it, so
    a new task computes one row of each column and a new target one column."""
    chooser = get_selector(selector)
    column_key = lambda t: (selector, t.name, t.fingerprint_sha256, tuple(t.keywords))  # noqa: E731
    if not chooser.needs_fingerprint:
        prepared = chooser.prepare(cloud.as_tasks(list(tasks), with_fingerprints=False))
        key = (cloud.uri, selector, tuple((t.name, t.fingerprint_sha256, tuple(t.keywords)) for t in tasks))
        with _LOCK:
            if key not in _COLUMNS and len(_COLUMNS) > 4:
                _COLUMNS.clear()
            columns = _COLUMNS.setdefault(key, {})
        parts, index = [(prepared, columns)], None
    else:
        prepared = prepared_sources(cloud, chooser, list(tasks))
        with _LOCK:
            parts = [(part, part.memo.setdefault("affinities", {}))
                     for part in (prepared.parts if isinstance(prepared, JoinedSources) else (prepared,))]
        index = prepared.index if isinstance(prepared, JoinedSources) else None
    for part, columns in parts:
        with _LOCK:
            missing = [t for t in targets if column_key(t) not in columns]
        if missing:
            queries = cloud.as_tasks(missing, with_fingerprints=chooser.needs_fingerprint,
                                     variants=chooser.variants or ("small",), moments=chooser.needs_moments)
            computed = chooser.matrix(part, queries)
            with _LOCK:
                for position, target in enumerate(missing):
                    columns[column_key(target)] = -np.asarray(computed[:, position], dtype=float)
    stacked = np.vstack([np.column_stack([columns[column_key(t)] for t in targets]) if targets else
                         np.zeros((len(part), 0)) for part, columns in parts])
    return pd.DataFrame(stacked if index is None else stacked[index], index=prepared.names,
                        columns=[t.name for t in targets])


@dataclass
class Ordering:
    """How one scenario walks the ranking: the sources in order, the rule that chose it, each source's reasons,
    whether the record (not distance) ordered them, and the notes a person reads first."""

    ranking: list[RankedSource]
    rule: Rule | None
    reasons: dict[str, dict]
    by_record: bool = False
    notes: list[str] = field(default_factory=list)


#: Targets of its own through which one account's evidence about its own sources counts, unless the reader
#: trusts that account (``--trusted``) or is that account: self-dealing, shown but bounded.
SELF_DEALT_TARGETS = 2


def admissible(runs: Iterable[StoredRun], tasks: Mapping[str, CloudTask],
               trusts: Callable[[str], bool] | None = None) -> tuple[list[StoredRun], int]:
    """The baseline and outcome runs that may speak about their target, and how many were left out.

    An outcome or baseline *about* a task is its owner's evidence: it counts when written by the task's contributor,
    by an account the owner named (``tfp contribute --measured-by``), or by the published reference's import. Any
    other account's tables about the task are left out, and so is what one account wrote beyond
    :data:`MAX_ROWS_PER_TARGET` rows about one target or :data:`MAX_ROWS_PER_ACCOUNT` in all (counted from each
    run's recorded row count before any table is read; a run without one counts as a full table).
    """
    kept, ignored = [], 0
    per_target: dict[tuple[str, str], int] = {}
    per_account: dict[str, int] = {}
    for run in runs:   # newest first
        task, writer = tasks.get(run.tags.get(Tag.TASK, "")), run.tags.get(Tag.CONTRIBUTOR, "")
        if task is None or (trusts is not None and not trusts(writer)):
            continue
        spoken = task.measured_by_account(writer) or writer.startswith(REFERENCE_PREFIX)
        rows = table_rows(run)
        counted = (per_target.get((writer, task.name), 0) + rows <= MAX_ROWS_PER_TARGET
                   and per_account.get(writer, 0) + rows <= MAX_ROWS_PER_ACCOUNT)
        if not (spoken and counted):
            ignored += 1
            continue
        per_target[(writer, task.name)] = per_target.get((writer, task.name), 0) + rows
        per_account[writer] = per_account.get(writer, 0) + rows
        kept.append(run)
    return kept, ignored


#: Each table's rows as plain tuples, by table (the parsed table object stays cached beside them): a refit after
#: one new table reads only that table's rows.
_ROWS: dict[int, tuple[object, list[tuple], list[tuple]]] = {}


def _rows_of(knowledge) -> tuple[list[tuple], list[tuple]]:
    """A table's ``(task, metric, repetition, value)`` baselines and ``(scenario, metric, repetition, source,
    target, value, held_out, writer)`` transfers."""
    known = _ROWS.get(id(knowledge))
    if known is not None and known[0] is knowledge:
        return known[1], known[2]
    baselines, transfers = [], []
    for row in knowledge.rows:
        for metric in BASE_METRICS:
            value = getattr(row, metric)
            if value is None:
                continue
            if knowledge.kind == KnowledgeKind.BASELINE:
                baselines.append((knowledge.task, metric, int(row.repetition or 0), float(value)))
            elif row.source != knowledge.task:
                transfers.append((_KINDS[knowledge.kind], metric, int(row.repetition or 0), row.source,
                                  knowledge.task, float(value), row.held_out, knowledge.contributor))
    with _LOCK:
        if len(_ROWS) > 20_000:
            _ROWS.clear()
        _ROWS[id(knowledge)] = (knowledge, baselines, transfers)
    return baselines, transfers


def _records(knowledges: Iterable, tasks: Mapping[str, CloudTask], trusted: Callable[[str], bool]) -> Outcomes:
    """Outcome records with their baselines, as :class:`Outcomes`; an account's outcomes about its own sources on
    its own targets count through at most :data:`SELF_DEALT_TARGETS` targets per source and scenario, unless the
    reader trusts or is that account (or it is the reference's)."""
    me = current_contributor()
    baselines: dict[tuple[str, str], dict[int, float]] = {}
    transfers: list[tuple] = []
    for knowledge in knowledges:
        base, moved = _rows_of(knowledge)
        for task, metric, repetition, value in base:
            baselines.setdefault((task, metric), {})[repetition] = value
        transfers.extend(t for t in moved if t[3] in tasks)
    dealt: dict[tuple[str, str, str], set[str]] = {}
    averages = {key: float(np.mean(list(known.values()))) for key, known in baselines.items()}
    owner = {name: task.contributor for name, task in tasks.items()}
    records = []
    transfers.sort(key=itemgetter(0, 3, 4, 1, 2))
    for scenario, metric, repetition, source, target, value, held_out, writer in transfers:
        if (writer == owner[source] == owner[target] and writer != me and not trusted(writer)
                and not writer.startswith(REFERENCE_PREFIX)):       # self-dealt
            seen = dealt.setdefault((scenario, source, writer), set())
            if target not in seen and len(seen) >= SELF_DEALT_TARGETS:
                continue
            seen.add(target)
        known = baselines.get((target, metric), {})
        # A baseline of the same repetition shares the outcome's held-out split; an average of others does not.
        same = repetition in known
        baseline = known[repetition] if same else averages.get((target, metric), math.nan)
        records.append((scenario, metric, repetition, source, target, value, baseline,
                        held_out if same else math.nan, writer))
    return Outcomes.from_rows(records, with_writers=True)


def order(evidence: CloudEvidence | None, scenario: str, target: str, ranking: Sequence[RankedSource],
          how: str = "auto") -> Ordering:
    """The ranking in the order ``scenario`` should walk it, the rule that chose it, and each source's reasons.

    The distance term, and who the query's nearest targets are, come from the ranking's own order (its rank, so
    merged rankings of two signals combine too). Each source's reasons carry its record on every other target
    (``track_record``) and on the targets nearest the query (``near_record``: the rule's neighbourhood, else the
    :data:`NEAR` nearest). When no source within reach has shown a measurable gain over training without transfer,
    on either, the answer says so first and lists the sources by distance: a record that moves nothing is no
    reason to prefer a far source.
    """
    reasons: dict[str, dict[str, Any]] = {r.name: {"distance": r.distance, "distance_rank": r.rank} for r in ranking}
    if evidence is None:
        return Ordering(list(ranking), None, reasons)
    model = evidence.model
    affinity = pd.Series({r.name: -float(r.rank) for r in ranking}, dtype=float)
    rule = (model.rule(scenario, target, evidence.affinities)
            if how == "auto" and scenario in model.scenarios() else None)
    near = model.neighbours(scenario, target, affinity, rule.neighbours if rule and rule.neighbours else NEAR)
    measurable = False
    for entry in ranking:
        overall = model.evidence(scenario, entry.name, target)
        close = model.evidence(scenario, entry.name, target, among=near)
        reasons[entry.name]["track_record"] = overall.to_json()
        reasons[entry.name]["near_record"] = close.to_json()
        measurable = measurable or overall.measurable_gain or close.measurable_gain
    if rule is None:
        return Ordering(list(ranking), None, reasons)
    if not measurable:
        note = (f"no source within reach has shown a measurable {scenario} gain over training without transfer, "
                f"neither on all other targets nor on the {len(near)} nearest yours (each mean gain's 95 % "
                f"interval holds 0, is a loss, or is under {MIN_EFFECT:.2f}): listed by distance, nearest first")
        return Ordering(list(ranking), rule, reasons, False, [note])
    if not rule.uses_track_record:
        return Ordering(list(ranking), rule, reasons)
    scores = model.scores(scenario, target, affinity, rule)
    ordered = sorted(ranking, key=lambda r: (-scores.get(r.name, -math.inf), r.rank))
    for position, entry in enumerate(ordered, start=1):
        reasons[entry.name]["score"] = round(float(scores.get(entry.name, math.nan)), 4)
        reasons[entry.name]["position"] = position
    return Ordering(ordered, rule, reasons, True)


def describe(rule: Rule | None, scenario: str, outcomes: int) -> str | None:
    """One line for a scenario's notes: which rule ordered it, and whether its order depends on the query."""
    if rule is None:
        return None
    if rule.uses_track_record:
        versus = (f"({rule.learned_score:+.3f} vs {rule.distance_score:+.3f} mean normalised outcome of the top-k "
                  f"on {rule.inner_targets} other targets of this cloud)")
        if rule.neighbours:
            return (f"ordered by {TRACK_RECORD} on the {rule.neighbours} targets nearest yours "
                    f"({rule.blend:.0%}, the rest on all targets): it chose better sources than distance alone "
                    f"{versus}, so the order depends on your task")
        if not rule.depends_on_target:
            return (f"ordered by {TRACK_RECORD} on all other targets: it chose better sources than distance or the "
                    f"records on each target's nearest {versus}, so the first suggestions are the same for most "
                    f"tasks; distance only breaks ties")
        return (f"ordered by {TRACK_RECORD} on all other targets, weighed with distance (x{rule.weight:g}): it chose "
                f"better sources than distance alone {versus}")
    if rule.inner_targets < 5:
        return (f"ordered by distance: the cloud holds {scenario} outcomes on only {rule.inner_targets} other "
                f"targets, too few for a learned ranking (each source's record is still shown)")
    return (f"ordered by distance: on {rule.inner_targets} other targets the sources' records did not choose "
            f"better sources than distance alone ({rule.distance_score:+.3f})")
