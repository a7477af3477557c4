"""``track-record``: rank sources by how well their knowledge transferred to *other* targets, learned from outcomes.

A distance says little about how well one particular source will transfer to one particular target; a source's
measured record on other targets says more (docs/method.md §8). :class:`TrackRecord` is fitted from measured
transfer outcomes (:class:`Outcomes`: the reference's, a cloud's, or both) and scores, per scenario, every source
for a target using only outcomes whose target is another task:

1. Each outcome is normalised within its case (scenario, base metric, repetition, target): the centred percentile
   rank of the target's performance among the sources measured on that case, in [-0.5, 0.5].
2. A source's record is the sum of its normalised outcomes over the other targets (mean over cases per target),
   divided by ``targets + shrinkage``: shrunk toward the mean (0) by how many targets back it.
3. The score adds ``weight`` x the distance's centred percentile rank among the candidate sources. ``weight`` and
   ``shrinkage`` are chosen per scenario by *inner* leave-one-target-out validation on the remaining targets (mean
   normalised outcome of the top-k), against distance alone; when distance alone validates better, the rule *is*
   distance.

Strictly leave-one-target-out: the score of any source for target ``t`` reads no outcome and no baseline whose
target is ``t`` (nor, with ``group_out``, whose target shares images with ``t``), neither in the record nor in the
inner validation that picks the rule. Torch-free; numpy only.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tfp_mlflow.noise import Z
from tfp_mlflow.selectors._ranks import centred_rank, nearest, top_rows
from tfp_mlflow.selectors.effect import MIN_EFFECT, Evidence, mean_interval, rounded
from tfp_mlflow.selectors.outcomes import Outcomes

__all__ = ["Outcomes", "TrackRecord", "Rule", "Evidence", "TRACK_RECORD", "WEIGHTS", "SHRINKAGES", "MIN_EFFECT",
           "NEIGHBOURHOODS", "BLENDS"]

#: The selector's registry-style name (it is fitted from outcomes, so it is not built by ``get_selector``).
TRACK_RECORD = "track-record"
#: Weights of the distance term the inner validation chooses from (0: the record alone, distance breaks ties).
WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)
#: Shrinkage toward the mean, in targets.
SHRINKAGES = (1.0, 3.0, 10.0)
#: How many of the targets nearest the query a neighbourhood record reads (``None``: every other target, the
#: global record).
NEIGHBOURHOODS: tuple[int | None, ...] = (None, 30, 20, 10)
#: The neighbourhood record's share in a blend with the global record (1: the neighbourhood alone).
BLENDS = (0.25, 0.5)
#: Below this many inner targets a scenario's rule is distance: too little evidence to choose anything else.
MIN_TARGETS = 5
_TIE = 1e-6   # the distance's share in any rule: equal records are ordered by distance


@dataclass(frozen=True)
class Rule:
    """What the inner leave-one-target-out validation chose for one scenario and one held-out target.

    ``weight`` is ``None`` when distance alone validated best (the rule is distance). Scores are mean normalised
    outcomes of the top-k suggestions over the inner targets (0 is what a random choice gets on average).
    """

    scenario: str
    weight: float | None
    shrinkage: float
    learned_score: float
    distance_score: float
    inner_targets: int
    #: The record reads the outcomes of this many targets nearest the query (``None``: every other target) ...
    neighbours: int | None = None
    #: ... with this share, the global record the rest.
    blend: float = 1.0

    @property
    def uses_track_record(self) -> bool:
        return self.weight is not None

    @property
    def depends_on_target(self) -> bool:
        """Whether the order this rule gives changes with the query: distance and neighbourhood records do; a
        global record with a distance weight of 0 is the same list for every target (distance breaks ties)."""
        return not self.uses_track_record or self.neighbours is not None or bool(self.weight)

    @property
    def kind(self) -> str:
        """``distance``, ``neighbourhood`` (the record on the nearest targets) or ``global`` (on all of them)."""
        return "distance" if not self.uses_track_record else "neighbourhood" if self.neighbours else "global"

    def to_json(self) -> dict:
        return {"scenario": self.scenario, "ordered_by": TRACK_RECORD if self.uses_track_record else "distance",
                "record": self.kind, "neighbours": self.neighbours,
                "blend": self.blend if self.neighbours else None,
                "weight_of_distance": self.weight, "shrinkage": self.shrinkage,
                "validated_score": rounded(self.learned_score), "distance_score": rounded(self.distance_score),
                "inner_targets": self.inner_targets}


class _Scenario:
    """One scenario's outcomes as matrices over (sources, targets)."""

    def __init__(self, table: pd.DataFrame, sources: list[str], outcomes: Outcomes) -> None:
        self.sources = sources
        self.targets = sorted(table["t"].unique().tolist())
        row = {s: i for i, s in enumerate(sources)}
        col = {t: j for j, t in enumerate(self.targets)}
        self.col = col
        table = table[table["s"] != table["t"]].copy()
        # Normalise within each case: centred percentile rank among the sources measured on it, in (-0.5, 0.5).
        case = ["metric", "r", "t"]
        size = table.groupby(case)["p"].transform("size")
        table["v"] = (table.groupby(case)["p"].rank(method="average") - 0.5) / size - 0.5
        table = table[table["s"].isin(row)].copy()
        # Integer cells: grouping by them keeps the matrices' coordinates without reading tuples back.
        table["i"] = table["s"].map(row).astype(np.int64)
        table["j"] = table["t"].map(col).astype(np.int64)
        per_pair = table.groupby(["i", "j"])
        value = per_pair["v"].mean()
        count = per_pair.size()
        shape = (len(sources), len(self.targets))
        self.values = np.full(shape, np.nan)
        self.cases = np.zeros(shape, dtype=np.int64)
        cells = _cells(value.index)
        self.values[cells] = value.to_numpy()
        self.cases[cells] = count.to_numpy()
        self.measured = np.isfinite(self.values)
        self.filled = np.where(self.measured, self.values, 0.0)
        # Gain over the target's baseline in balanced accuracy (mean over repetitions), for the reasons.
        ba = table[(table["metric"] == "balanced_accuracy") & table["baseline"].notna()]
        pairs = [ba["i"], ba["j"]]
        gain = (ba["p"] - ba["baseline"]).groupby(pairs).mean()
        # Twice the standard error of the difference on the held-out split (NaN where its size is unknown).
        held_out = ba["n"].to_numpy(dtype=float)
        spread = [_variance(ba["p"].to_numpy(dtype=float), held_out), _variance(ba["baseline"].to_numpy(dtype=float),
                                                                              held_out)]
        margin = pd.Series(Z * np.sqrt(spread[0] + spread[1]), index=ba.index).groupby(pairs).mean()
        self.gains = np.full(shape, np.nan)
        self.margins = np.full(shape, np.nan)
        if len(gain):
            at = _cells(gain.index)
            self.gains[at] = gain.to_numpy()
            self.margins[at] = margin.reindex(gain.index).to_numpy()
        # Who wrote each measured cell's outcomes (one account per cell: its target's owner), where known.
        self.writers = np.full(shape, "", dtype=object)
        if "w" in table.columns:
            first = table.groupby(["i", "j"])["w"].first()
            self.writers[_cells(first.index)] = first.to_numpy()
        # Columns that share images with each target (itself included), for group-out.
        self.group_of = [np.array([col[m] for m in outcomes.group(t) if m in col]) for t in self.targets]


class TrackRecord:
    """A fitted ``track-record`` selector: per scenario, sources scored by their record on other targets.

    Parameters
    ----------
    outcomes : Outcomes
    sources : sequence of str, optional
        Every candidate source (default: every task that appears in the outcomes). A source with no outcomes
        has record 0 (the mean) and is ordered by distance.
    top_k : int
        Suggestions the inner validation scores (the evaluation's top-k).
    group_out : bool
        Also hide, for target ``t``, the outcomes of every target sharing images with ``t``.
    neighbourhoods : sequence of int or None
        How many of the targets nearest the query a record may read, as the inner validation chooses (``None``:
        every other target). The nearest are found by the same affinities as the distance term (a target's own
        affinity column, or, for the query, ``affinity``): no outcome decides who is a neighbour.
    blends : sequence of float
        The neighbourhood record's shares in a blend with the global record the inner validation chooses from.
    """

    def __init__(self, outcomes: Outcomes, sources: Sequence[str] | None = None, *, top_k: int = 3,
                 group_out: bool = False, weights: Sequence[float] = WEIGHTS,
                 shrinkages: Sequence[float] = SHRINKAGES,
                 neighbourhoods: Sequence[int | None] = NEIGHBOURHOODS, blends: Sequence[float] = BLENDS) -> None:
        self.outcomes = outcomes
        self.top_k = top_k
        self.group_out = group_out
        self.weights, self.shrinkages = tuple(weights), tuple(shrinkages)
        self.neighbourhoods, self.blends = tuple(neighbourhoods), tuple(blends)
        table = outcomes.table
        names = sources if sources is not None else sorted(set(table["s"]) | set(table["t"]))
        self.sources = list(dict.fromkeys(names))
        self._row = {s: i for i, s in enumerate(self.sources)}
        self._scenarios = {scenario: _Scenario(group, self.sources, outcomes)
                           for scenario, group in table.groupby("scenario")}

    # -- what a query reads ------------------------------------------------------------------------------------
    def scenarios(self) -> list[str]:
        return list(self._scenarios)

    def rule(self, scenario: str, target: str, affinities: pd.DataFrame) -> Rule:
        """The rule for ``target`` in ``scenario``, chosen on the other targets (``affinities``: rows sources,
        columns targets, higher is closer; the inner targets' columns are read)."""
        data = self._scenarios.get(scenario)
        if data is None:
            return Rule(scenario, None, 0.0, float("nan"), float("nan"), 0)
        return self._validate(data, self._hidden(data, target), affinities, scenario)

    def scores(self, scenario: str, target: str, affinity: pd.Series, rule: Rule | None = None) -> pd.Series:
        """Score of every source for ``target`` (higher is better), from outcomes on other targets only.

        ``affinity`` (index sources, higher is closer; NaN: unknown) is the distance term; ``rule`` defaults to
        one chosen without distance information (the record, distance breaking ties).
        """
        close = centred_rank(affinity.reindex(self.sources).to_numpy(dtype=float))
        data = self._scenarios.get(scenario)
        if data is None or (rule is not None and not rule.uses_track_record):
            return pd.Series(close, index=self.sources)
        rule = rule or Rule(scenario, 0.0, self.shrinkages[0], float("nan"), float("nan"), 0)
        hidden = self._hidden(data, target)
        record = self._record(data, self._readable(data, hidden, affinity, None), rule.shrinkage)
        if rule.neighbours:
            near = self._record(data, self._readable(data, hidden, affinity, rule.neighbours), rule.shrinkage)
            record = (1 - rule.blend) * record + rule.blend * near
        return pd.Series(record + ((rule.weight or 0.0) + _TIE) * close, index=self.sources)

    def neighbours(self, scenario: str, target: str, affinity: pd.Series, k: int | None) -> list[str]:
        """The ``k`` targets of ``scenario`` nearest ``target`` whose outcomes a query may read, nearest first
        (``affinity``: index tasks, higher is closer); every readable target when ``k`` is ``None``."""
        data = self._scenarios.get(scenario)
        if data is None:
            return []
        keep = self._readable(data, self._hidden(data, target), affinity, k)
        closeness = affinity.reindex(data.targets).to_numpy(dtype=float)
        order = np.argsort(-np.where(np.isfinite(closeness), closeness, -np.inf), kind="stable")
        return [data.targets[j] for j in order if keep[j]]

    def evidence(self, scenario: str, source: str, target: str, among: Sequence[str] | None = None) -> Evidence:
        """The source's record in ``scenario`` as a person reads it, without ``target``'s outcomes (and, with
        ``among``, on those targets only: the query's neighbourhood)."""
        data = self._scenarios.get(scenario)
        if data is None or source not in self._row:
            return Evidence(0, 0, None, 0, 0.0, among=None if among is None else len(among))
        i = self._row[source]
        if not data.measured[i].any():   # never tried anywhere: nothing to read (most sources of a large cloud)
            return Evidence(0, 0, None, 0, 0.0, among=None if among is None else len(among))
        keep = np.ones(len(data.targets), dtype=bool)
        keep[self._hidden(data, target)] = False
        if among is not None:
            keep &= np.isin(np.array(data.targets, dtype=object), list(among))
        measured = data.measured[i] & keep
        known = measured & np.isfinite(data.gains[i])
        gains = data.gains[i][known]
        margins = data.margins[i][known]
        sized = np.isfinite(margins)
        record = float(data.filled[i][keep].sum() / (measured.sum() + self.shrinkages[0]))
        mean, error, interval = mean_interval(gains)
        return Evidence(tried=int(measured.sum()), improved=int((gains > 0).sum()),
                        median_gain=float(np.median(gains)) if len(gains) else None,
                        outcomes=int(data.cases[i][measured].sum()), record=record,
                        within_noise=int((np.abs(gains[sized]) < margins[sized]).sum()),
                        mean_gain=mean, interval=interval, standard_error=error,
                        beyond_noise=int((gains[sized] >= margins[sized]).sum()), sized=int(sized.sum()),
                        among=None if among is None else int(keep.sum()),
                        accounts=len({w for w in data.writers[i][measured] if w}))

    def matrix(self, scenario: str, distances: pd.DataFrame, targets: Sequence[str],
               columns: Mapping[str, str] | None = None) -> pd.DataFrame:
        """Leave-one-target-out distances for ``targets`` (rows the sources, lower is better, never 0).

        ``distances`` (rows sources, columns targets, lower is closer, 0: not computed) is the distance the rules
        combine with; ``columns`` maps a target to its column there (the reference's shrunk names).
        """
        columns = dict(columns or {})
        affinities = _affinities(distances, self.sources)
        known = sorted(set(self.outcomes.table["t"].unique()) | set(targets))
        # One column per target, under its own name (the rules read the inner targets' columns by name).
        by_target = pd.DataFrame({t: affinities[columns.get(t, t)] for t in known
                                  if columns.get(t, t) in affinities.columns}, index=self.sources)
        out = {}
        for target in targets:
            affinity = by_target[target] if target in by_target.columns else pd.Series(np.nan, index=self.sources)
            rule = self.rule(scenario, target, by_target)
            score = self.scores(scenario, target, affinity, rule).to_numpy()
            out[columns.get(target, target)] = 1.0 + (score.max() - score)
        return pd.DataFrame(out, index=self.sources)

    # -- fitting ----------------------------------------------------------------------------------------------
    def _hidden(self, data: _Scenario, target: str) -> np.ndarray:
        """Columns a query for ``target`` may not read."""
        names = self.outcomes.group(target) if self.group_out else {target}
        return np.array(sorted(data.col[n] for n in names if n in data.col), dtype=np.int64)

    @staticmethod
    def _record(data: _Scenario, keep: np.ndarray, shrinkage: float) -> np.ndarray:
        return data.filled[:, keep].sum(axis=1) / (data.measured[:, keep].sum(axis=1) + shrinkage)

    def _readable(self, data: _Scenario, hidden: np.ndarray, affinity: pd.Series, k: int | None) -> np.ndarray:
        """Columns a record for the query reads: every one not hidden, or the ``k`` nearest by ``affinity``.

        Sums are taken over these (never a total minus the hidden part, which would leak them in the last bits).
        """
        keep = np.ones(len(data.targets), dtype=bool)
        keep[hidden] = False
        if k is None:
            return keep
        closeness = affinity.reindex(data.targets).to_numpy(dtype=float)
        return nearest(np.where(keep & np.isfinite(closeness), closeness, -np.inf)[:, None], k)[:, 0]

    def _validate(self, data: _Scenario, hidden: np.ndarray, affinities: pd.DataFrame, scenario: str) -> Rule:
        """Choose weight and shrinkage on the inner targets (every target but the hidden ones), each scored with
        its own outcomes (and, with group-out, its group's) hidden as well."""
        inner = np.setdiff1d(np.arange(len(data.targets)), hidden)
        n = len(self.sources)
        # Exclusion per inner target: the outer hidden columns, plus the inner target (and its group).
        excluded = np.zeros((len(data.targets), len(inner)), dtype=bool)
        excluded[hidden, :] = True
        for j, u in enumerate(inner):
            excluded[data.group_of[u] if self.group_out else [u], j] = True
        total = data.filled @ (~excluded)                                      # (n, inner)
        count = data.measured.astype(float) @ (~excluded)
        close = np.zeros((n, len(inner)))
        names = [data.targets[u] for u in inner]
        present = [j for j, name in enumerate(names) if name in affinities.columns]
        if present:
            block = affinities.reindex(index=self.sources, columns=[names[j] for j in present]).to_numpy(dtype=float)
            close[:, present] = np.apply_along_axis(centred_rank, 0, block)
        candidates = data.measured[:, inner].copy()
        for j, u in enumerate(inner):                       # a target's own group is never its source
            group = [self._row[m] for m in self.outcomes.group(data.targets[u]) if m in self._row]
            candidates[group, j] = False
        values = data.filled[:, inner]
        usable = candidates.sum(axis=0) >= 2
        distance_score = self._top_k_score(close, candidates, values, usable)
        best: tuple[float, float | None, float, int | None, float] = (distance_score, None, self.shrinkages[0],
                                                                       None, 1.0)
        if usable.sum() >= MIN_TARGETS:
            # Who is near each inner target: the other readable targets by their affinity to it (no outcome).
            near = affinities.reindex(index=data.targets, columns=names).to_numpy(dtype=float)
            near = np.where(~excluded & np.isfinite(near), near, -np.inf)
            for k in self.neighbourhoods:
                reads = None if k is None else nearest(near, k).astype(float)        # (targets, inner)
                for shrinkage in self.shrinkages:
                    overall = total / (count + shrinkage)
                    local = None if reads is None else (data.filled @ reads) / (data.measured @ reads + shrinkage)
                    for blend in ((1.0,) if local is None else self.blends):
                        record = overall if local is None else (1 - blend) * overall + blend * local
                        for weight in self.weights:
                            score = self._top_k_score(record + (weight + _TIE) * close, candidates, values, usable)
                            if score > best[0] + 1e-12:
                                best = (score, weight, shrinkage, k, blend)
        learned = best[0] if best[1] is not None else float("nan")
        return Rule(scenario, best[1], best[2], learned, distance_score, int(usable.sum()), best[3], best[4])

    def _top_k_score(self, scores: np.ndarray, candidates: np.ndarray, values: np.ndarray,
                     usable: np.ndarray) -> float:
        """Mean over usable inner targets of the mean normalised outcome of the top-k candidates."""
        if not usable.any():
            return float("nan")
        masked = np.where(candidates, scores, -np.inf)[:, usable]
        order = top_rows(masked, self.top_k)
        columns = np.arange(masked.shape[1])
        picked = candidates[:, usable][order, columns]
        gained = values[:, usable][order, columns]
        return float(np.mean((gained * picked).sum(axis=0) / np.maximum(picked.sum(axis=0), 1)))


def _cells(index: pd.MultiIndex) -> tuple[np.ndarray, np.ndarray]:
    """A (row, column) group index as two integer arrays, for fancy indexing."""
    return (index.get_level_values(0).to_numpy(dtype=np.int64), index.get_level_values(1).to_numpy(dtype=np.int64))


def _affinities(distances: pd.DataFrame, sources: Sequence[str]) -> pd.DataFrame:
    """Distances → affinities (0 and non-finite: unknown), rows the given sources."""
    data = distances.reindex(index=list(sources)).to_numpy(dtype=float).copy()
    data[(data == 0) | ~np.isfinite(data)] = np.nan
    return pd.DataFrame(-data, index=list(sources), columns=distances.columns)


def _variance(score: np.ndarray, held_out: np.ndarray) -> np.ndarray:
    """Squared standard error of scores on ``held_out`` images, as :func:`tfp_mlflow.noise.standard_error`."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.maximum(score * (1 - score), 1.0 / held_out) / held_out
