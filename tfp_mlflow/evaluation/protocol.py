"""Scoring task selectors against measured transfer outcomes, as the reference did (docs/method.md §6).

:func:`evaluate` takes selectors as distance matrices (rows sources, columns targets) and a
:class:`~tfp_mlflow.reference.Reference`, scores every case (validation target x repetition x scenario x base
metric), and summarises: gain curves (Fig. 4 top), win rates (Supplementary Table 4), meta-metric means, setup
stability and a bootstrap ranking ("aggregate then rank", Fig. 5).
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats

from tfp_mlflow.cloud.schema import BASE_METRICS, EVALUATION_EXPERIMENT, Kind, Metric, Tag
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.evaluation.meta_metrics import (
    META_METRICS,
    WIN_RATE_METRICS,
    Case,
    affinities_from_distances,
    top_k_positions,
    weighted_tau_of,
)
from tfp_mlflow.reference import Reference
from tfp_mlflow.scenarios import scenario_names

__all__ = ["Evaluation", "evaluate", "STABILITY_COMPONENTS"]

MAX_SHOTS = 5
#: Setup components whose variation the stability score measures.
STABILITY_COMPONENTS = ("meta_metric", "base_metric", "repetition", "target", "scenario")


@dataclass
class Evaluation:
    """Everything :func:`evaluate` computes; :meth:`to_json` gives the stable JSON of ``tfp evaluate``.

    Attributes
    ----------
    scores : DataFrame
        One row per selector x scenario x base metric x repetition x target x meta metric (``avg`` mode, top-k).
    gains : DataFrame
        Gain (0/1) of the best of the top ``k`` shots, ``k`` = 1..5, balanced accuracy, per case.
    deltas : DataFrame
        Improvement over the baseline of the best of the top ``k`` shots, ``k`` = 1..5, both base metrics, per case
        (Fig. 4 bottom).
    """

    selectors: list[str]
    top_k: int
    scores: pd.DataFrame
    gains: pd.DataFrame
    bootstrap: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    deltas: pd.DataFrame = field(default_factory=pd.DataFrame)

    def win_rates(self) -> dict[str, dict[str, float | None]]:
        """Percent of setups (target x repetition x meta metric x base metric) each selector wins, ties shared."""
        setups = self.scores[self.scores["meta_metric"].isin(WIN_RATE_METRICS)]
        out: dict[str, dict[str, float | None]] = {s: {} for s in self.selectors}
        keys = ["base_metric", "repetition", "target", "meta_metric"]
        present = [s for s in scenario_names() if (setups["scenario"] == s).any()]   # a cloud may lack a scenario
        for scenario in present:
            table = setups[setups["scenario"] == scenario].pivot_table(index=keys, columns="selector",
                                                                       values="score", dropna=False)
            table = table.reindex(columns=self.selectors)
            best = table.max(axis=1)
            for selector in self.selectors:
                out[selector][scenario] = 100.0 * float((table[selector] == best).sum()) / max(1, len(table))
        for selector in self.selectors:
            out[selector]["mean"] = float(np.mean([out[selector][s] or 0.0 for s in present])) if present else None
        return out

    def gain_curve(self) -> dict[str, dict[str, list[float]]]:
        """Percent of validation cases improved in balanced accuracy by the best of the top k, k = 1..5."""
        out: dict[str, dict[str, list[float]]] = {}
        for (selector, scenario), table in self.gains.groupby(["selector", "scenario"]):
            out.setdefault(selector, {})[scenario] = [100.0 * float(table[f"k{k}"].mean())
                                                      for k in range(1, MAX_SHOTS + 1)]
        return {s: out.get(s, {}) for s in self.selectors}

    def delta_curve(self, metric: str = "auroc") -> dict[str, dict[str, list[float | None]]]:
        """Mean improvement over the baseline of the best of the top k, k = 1..5 (Fig. 4 bottom: AUROC)."""
        out: dict[str, dict[str, list[float | None]]] = {s: {} for s in self.selectors}
        if self.deltas.empty:
            return out
        rows = self.deltas[self.deltas["base_metric"] == metric]
        for (selector, scenario), table in rows.groupby(["selector", "scenario"]):
            out[selector][scenario] = [_finite(table[f"k{k}"].mean()) for k in range(1, MAX_SHOTS + 1)]
        return out

    def relative_improvement(self, over: str = "manual", metric: str = "auroc") -> dict[str, dict[str, float | None]]:
        """How much larger each selector's mean improvement is than ``over``'s, in percent, averaged over targets,
        repetitions and k = 1..5 (the paper: bKLD(small,target) over manual, 12 / 57 / 15 / 2 %)."""
        if over not in self.selectors or self.deltas.empty:
            return {}
        rows = self.deltas[self.deltas["base_metric"] == metric]
        shots = [f"k{k}" for k in range(1, MAX_SHOTS + 1)]
        means = rows.groupby(["selector", "scenario"])[shots].mean().mean(axis=1)
        out: dict[str, dict[str, float | None]] = {}
        for selector in self.selectors:
            if selector == over:
                continue
            for scenario in scenario_names():
                base, mine = means.get((over, scenario)), means.get((selector, scenario))
                if base is not None and mine is not None and base != 0:
                    out.setdefault(selector, {})[scenario] = _finite(100.0 * (mine - base) / abs(base))
        return out

    def meta_metric_means(self) -> dict[str, dict[str, dict[str, float | None]]]:
        """Mean of each meta metric over targets, repetitions and base metrics (``avg`` mode, top-k)."""
        means = self.scores.groupby(["selector", "scenario", "meta_metric"])["score"].mean()
        return {s: {c: {m: _finite(means.get((s, c, m))) for m in META_METRICS} for c in scenario_names()}
                for s in self.selectors}

    def stability(self) -> dict[str, float | None]:
        """Setup stability: mean Kendall tau-b between the selectors' scores when one component varies."""
        if len(self.selectors) < 3:
            return {c: None for c in STABILITY_COMPONENTS}   # tau of two values says nothing
        frame = self.scores[self.scores["meta_metric"].isin(WIN_RATE_METRICS)]
        out = {}
        for varying in STABILITY_COMPONENTS:
            fixing = [c for c in STABILITY_COMPONENTS if c != varying]
            # One row per setup and value of the varying component, one column per selector.
            wide = frame.set_index([*fixing, varying, "selector"])["score"].unstack("selector")
            wide = wide.reindex(columns=self.selectors)
            per_setup = []
            for _, group in wide.groupby(level=list(range(len(fixing)))):
                vectors = group.to_numpy()
                taus = [kendall_tau_b(vectors[i], vectors[j]) for i, j in combinations(range(len(vectors)), 2)]
                if taus and not np.all(np.isnan(taus)):
                    per_setup.append(np.nanmean(taus))
            out[varying] = _finite(np.mean(per_setup)) if per_setup else None
        return out

    def to_json(self) -> dict[str, Any]:
        return {"schema": "tfp.evaluation/1", "selectors": self.selectors, "top_k": self.top_k,
                "scenarios": list(scenario_names()), "win_rates": self.win_rates(), "gain_curve": self.gain_curve(),
                "delta_curve_auroc": self.delta_curve("auroc"),
                "relative_improvement_over_manual": self.relative_improvement("manual", "auroc"),
                "meta_metrics": self.meta_metric_means(), "setup_stability": self.stability(),
                "bootstrap_rank_fractions": self.bootstrap,
                "win_rate_setups_per_scenario": int(len(self.scores) * len(WIN_RATE_METRICS) / max(
                    1, len(self.selectors) * len(scenario_names()) * len(META_METRICS)))}

    def write_plots(self, folder: str | os.PathLike) -> list[Path]:
        """The gain and AUROC improvement curves (Fig. 4) and, with two or more selectors, the bootstrap ranks
        (Fig. 5)."""
        from tfp_mlflow.plots import plot_gain_curves, plot_rank_distribution

        folder = Path(folder)
        paths = [plot_gain_curves(self.gain_curve(), folder / "gain_curves.png")]
        deltas = self.delta_curve("auroc")
        if any(deltas.values()):
            paths.append(plot_gain_curves(deltas, folder / "auroc_improvement.png",
                                          ylabel="mean AUROC improvement (best of top k)"))
        if self.bootstrap:
            paths.append(plot_rank_distribution(self.bootstrap, folder / "bootstrap_ranks.png"))
        return paths

    def log(self, cloud, *, reference: str) -> str:
        """Log as a run of the ``tfp-evaluations`` experiment: JSON, plots, win rates as metrics."""

        with cloud.record(Kind.EVALUATION, {Tag.REFERENCE: reference[:500]}, experiment=EVALUATION_EXPERIMENT) as run:
            run.log_params({"selectors": ",".join(self.selectors)[:500], "top_k": self.top_k})
            run.log_metrics({f"win_rate.{_metric_key(selector)}.{scenario}": value
                             for selector, rates in self.win_rates().items() for scenario, value in rates.items()})
            with tempfile.TemporaryDirectory() as tmp:
                report = Path(tmp) / "evaluation.json"
                report.write_text(json.dumps(self.to_json(), indent=1, sort_keys=True))
                for path in [report, *self.write_plots(tmp)]:
                    run.log_artifact(path)
        return run.run_id


def _metric_key(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:200]


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def kendall_tau_b(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b of two short vectors, pairs with a NaN left out: what ``scipy.stats.kendalltau(a, b,
    nan_policy="omit")`` returns, without its per-call overhead (the stability score makes 10**5 calls on vectors
    of a few selectors). NaN when fewer than two pairs remain or every pair is tied in ``a`` or in ``b``."""
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if len(a) < 2:
        return float("nan")
    upper = np.triu_indices(len(a), k=1)
    da = np.sign(a[:, None] - a[None, :])[upper]
    db = np.sign(b[:, None] - b[None, :])[upper]
    both = da * db
    concordant_minus_discordant = both.sum()
    untied_a, untied_b = np.count_nonzero(da), np.count_nonzero(db)
    if untied_a == 0 or untied_b == 0:
        return float("nan")
    return float(concordant_minus_discordant / np.sqrt(float(untied_a) * float(untied_b)))


def evaluate(ref: Reference, selectors: Mapping[str, pd.DataFrame | Mapping[str, pd.DataFrame]], *,
             top_k_shots: int = 3, bootstraps: int = 1000, seed: int = 0, measured_only: bool = False) -> Evaluation:
    """Score selectors (name → distance matrix, rows sources, columns targets, or scenario → such a matrix) on
    the reference's validation targets.

    Targets are looked up under their shrunk name where the reference shrank them; the valid sources of a target
    exclude itself and the tasks sharing its images. ``measured_only`` (a user's cloud, where few pairs were
    run) keeps, per case, only the sources whose outcome was measured, and skips cases with fewer than two.
    """
    if not selectors:
        raise BadInputError("nothing to evaluate: give at least one selector (--selector NAME=PATH.csv or --builtin)")
    if not 1 <= top_k_shots <= MAX_SHOTS:
        raise BadInputError(f"--top-k must lie between 1 and {MAX_SHOTS}, got {top_k_shots}")
    affinities: dict[str, dict[str, pd.DataFrame]] = {}
    for name, given in selectors.items():
        # One matrix for every scenario, or one per scenario (a learned selector's rule differs by scenario).
        per_scenario = given if isinstance(given, Mapping) else dict.fromkeys(scenario_names(), given)
        affinities[name] = {}
        for scenario in scenario_names():
            distances = per_scenario.get(scenario)
            if distances is None:
                raise BadInputError(f"selector {name!r} has no distance matrix for scenario {scenario!r}")
            missing_targets = [t for t in ref.validation if ref.shrink_map.get(t, t) not in distances.columns]
            missing_sources = [t for t in ref.tasks if t not in distances.index]
            if missing_targets or missing_sources:
                what = (f"target column {missing_targets[0]!r}" if missing_targets else
                        f"source row {missing_sources[0]!r}")
                raise BadInputError(f"selector {name!r}: the distance matrix lacks {what}; rows must be the "
                                    f"reference's tasks and columns its targets (shrunk names where shrunk)")
            shared = not isinstance(given, Mapping) and affinities[name]   # the same matrix: converted once
            affinities[name][scenario] = (next(iter(affinities[name].values())) if shared
                                          else affinities_from_distances(distances))
    score_rows, gain_rows, delta_rows = [], [], []
    for scenario in scenario_names():
        for metric in BASE_METRICS:
            for repetition in ref.repetitions:
                outcomes = ref.outcome_table(scenario, metric, repetition)
                for target in ref.validation:
                    valid = ref.valid_sources(target)
                    measured = (outcomes[target] if target in outcomes.columns
                                else pd.Series(np.nan, index=outcomes.index)).reindex(valid)
                    if measured_only:
                        measured = measured.dropna()
                        valid = measured.index.tolist()
                        if len(valid) < 2:
                            continue
                    case = Case(measured.to_numpy(dtype=float), ref.baseline(target, metric, repetition))
                    labels = {"scenario": scenario, "base_metric": metric, "repetition": repetition, "target": target}
                    for name, tables in affinities.items():
                        affinity = tables[scenario][ref.shrink_map.get(target, target)].reindex(valid).to_numpy()
                        ranked = top_k_positions(affinity, MAX_SHOTS)
                        suggested = ranked[:top_k_shots]
                        for meta in META_METRICS:
                            score = (weighted_tau_of(affinity, case.outcomes) if meta == "weightedtau" else
                                     case.score(meta, suggested, "avg"))
                            score_rows.append({**labels, "selector": name, "meta_metric": meta, "score": score})
                        delta_rows.append({**labels, "selector": name, **{
                            f"k{k}": case.score("improvement", ranked[:k], "best") for k in range(1, MAX_SHOTS + 1)}})
                        if metric == Metric.BALANCED_ACCURACY:
                            gain_rows.append({**labels, "selector": name, **{
                                f"k{k}": case.score("gain", ranked[:k], "best") for k in range(1, MAX_SHOTS + 1)}})
    result = Evaluation(selectors=list(selectors), top_k=top_k_shots, scores=pd.DataFrame(score_rows),
                        gains=pd.DataFrame(gain_rows), deltas=pd.DataFrame(delta_rows))
    if len(selectors) >= 2 and bootstraps:
        result.bootstrap = bootstrap_ranking(result.scores, list(selectors), bootstraps, seed)
    return result


def bootstrap_ranking(scores: pd.DataFrame, selectors: list[str], bootstraps: int = 1000,
                      seed: int = 0) -> dict[str, dict[str, list[float]]]:
    """Per scenario, the share of bootstraps in which each selector takes rank 1, 2, ... (aggregate then rank).

    A bootstrap draws the scenario's cases (target x repetition x base metric x meta metric, win-rate metrics,
    cases where every selector has a score) with replacement, averages each selector's scores, then ranks the
    means (1 = best, ties averaged and rounded down).
    """
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, list[float]]] = {}
    frame = scores[scores["meta_metric"].isin(WIN_RATE_METRICS)]
    for scenario in scenario_names():
        table = frame[frame["scenario"] == scenario].pivot_table(
            index=["base_metric", "repetition", "target", "meta_metric"], columns="selector", values="score")
        values = table.reindex(columns=selectors).dropna().to_numpy()
        if len(values) == 0:
            continue
        draws = rng.integers(0, len(values), size=(bootstraps, len(values)))
        means = values[draws].mean(axis=1)                                   # (bootstraps, selectors)
        ranks = np.floor(scipy.stats.rankdata(-means, axis=1, method="average")).astype(int)
        out[scenario] = {s: [float(np.mean(ranks[:, j] == r)) for r in range(1, len(selectors) + 1)]
                         for j, s in enumerate(selectors)}
    return out
