"""How much evidence does a cloud need before a ranking learned from outcomes beats distance?

Scores the learned ``track-record`` selector (strictly leave-one-target-out) beside the distances the reference
ships (bKLD(small,target), manual by keywords) and any ``--selector NAME=CSV`` (the paper's other selectors'
matrices, when you have them), with the reference's protocol on its 43 validation targets:

1. per scenario: win rate (Supplementary Table 4 setups, ties count for each tied selector), top-3 percentile
   rank, weighted Kendall tau and regret (means over setups), each with a 95 % bootstrap interval over targets;
   and whether the advice depends on the target: how many distinct sources come first across the 43 targets, the
   most frequent first and its share, and the mean gain of the first suggestion over the target's no-transfer
   baseline (balanced accuracy, 95 % bootstrap interval), beside the global-record rule (``track-record-global``,
   the rule before neighbourhoods);
2. a growth curve: the learned selector fitted on a random share (5-100 %) of the measured (source, target) pairs,
   scored against bKLD(small,target) alone, several draws per share: after how many outcomes does it win;
3. the learned selector fitted on the 28 development targets' outcomes only (a young cloud's situation).

The figures and the growth curve are logged to MLflow (``--tracking-uri``, default ./benchmark-runs).

    python benchmarks/selector.py                         # all three (about 15 minutes on 2 CPU cores)
    python benchmarks/selector.py --fractions 0.1 1 --draws 1 --bootstraps 200
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tfp_mlflow.evaluation import evaluate
from tfp_mlflow.evaluation.learned import distance_for_track_record, track_record_matrices
from tfp_mlflow.evaluation.meta_metrics import WIN_RATE_METRICS
from tfp_mlflow.reference import Reference, bundled_reference, read_distance_matrix
from tfp_mlflow.scenarios import scenario_names
from tfp_mlflow.selectors.track_record import TRACK_RECORD, Outcomes

BASE = "bkld-small-target"
GLOBAL = f"{TRACK_RECORD}-global"


def first_suggestions(ref, matrices, outcomes: Outcomes, draws: int, seed: int) -> pd.DataFrame:
    """Per selector and scenario: distinct first sources over the validation targets, the most frequent one and
    its share, and the mean gain of the first suggestion over the target's baseline with a bootstrap interval."""
    table = outcomes.table[outcomes.table["metric"] == "balanced_accuracy"]
    gains = (table["p"] - table["baseline"]).groupby([table["scenario"], table["s"], table["t"]]).mean()
    rng = np.random.default_rng(seed)
    rows = []
    for selector, by_scenario in matrices.items():
        for scenario in scenario_names():
            matrix = by_scenario[scenario] if isinstance(by_scenario, dict) else by_scenario
            firsts, gained = [], []
            for target in ref.validation:
                column = ref.shrink_map.get(target, target)
                measured = [s for s in ref.valid_sources(target) if (scenario, s, target) in gains.index]
                if column not in matrix.columns or not measured:
                    continue
                first = matrix.loc[measured, column].astype(float).idxmin()
                firsts.append(first)
                gained.append(gains[(scenario, first, target)])
            counts = pd.Series(firsts).value_counts()
            values = np.array(gained)
            means = values[rng.integers(0, len(values), size=(draws, len(values)))].mean(axis=1)
            rows.append({"selector": selector, "scenario": scenario, "distinct": len(counts), "targets": len(firsts),
                         "most": counts.index[0], "share": counts.iloc[0] / len(firsts), "gain": values.mean(),
                         "gain_low": np.percentile(means, 2.5), "gain_high": np.percentile(means, 97.5)})
    return pd.DataFrame(rows)


def per_target(result) -> pd.DataFrame:
    """Per selector x scenario x target: win share over its setups and the means of the meta metrics."""
    scores = result.scores[result.scores["meta_metric"].isin(WIN_RATE_METRICS)]
    keys = ["scenario", "base_metric", "repetition", "target", "meta_metric"]
    wide = scores.pivot_table(index=keys, columns="selector", values="score", dropna=False)
    wins = wide.eq(wide.max(axis=1), axis=0).astype(float).groupby(level=["scenario", "target"]).mean()
    wins = wins.stack().rename("win").reset_index()
    means = scores.groupby(["selector", "scenario", "target", "meta_metric"])["score"].mean().unstack("meta_metric")
    return wins.merge(means.reset_index(), on=["selector", "scenario", "target"])


def bootstrap(table: pd.DataFrame, column: str, draws: int, rng: np.random.Generator) -> tuple[float, float, float]:
    values = table[column].to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    picks = rng.integers(0, len(values), size=(draws, len(values)))
    means = values[picks].mean(axis=1)
    return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def comparison(ref, matrices, draws: int, seed: int) -> pd.DataFrame:
    result = evaluate(ref, matrices, bootstraps=0)
    table = per_target(result)
    rng = np.random.default_rng(seed)
    rows = []
    for (selector, scenario), group in table.groupby(["selector", "scenario"], sort=False):
        row = {"selector": selector, "scenario": scenario}
        for column, scale in (("win", 100.0), ("percentile", 1.0), ("weightedtau", 1.0), ("regret", 1.0)):
            mean, low, high = bootstrap(group, column, draws, rng)
            row.update({column: mean * scale, f"{column}_low": low * scale, f"{column}_high": high * scale})
        rows.append(row)
    return pd.DataFrame(rows)


def mean_win_rates(ref, matrices) -> dict[str, dict[str, float]]:
    return evaluate(ref, matrices, bootstraps=0).win_rates()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--selector", action="append", default=[], metavar="NAME=CSV",
                        help="another selector's distance matrix (rows sources, columns targets); repeatable")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.1, 0.25, 0.5, 1.0])
    parser.add_argument("--draws", type=int, default=3, help="random subsamples per fraction")
    parser.add_argument("--bootstraps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--group-out", action="store_true")
    parser.add_argument("--tracking-uri", default=f"sqlite:///{Path('benchmark-runs').resolve()}/mlflow.db")
    args = parser.parse_args()
    started = time.perf_counter()
    ref = Reference.load(bundled_reference())
    distances = distance_for_track_record(ref)
    outcomes = Outcomes.from_reference(ref)
    pairs = outcomes.table[["scenario", "s", "t"]].drop_duplicates()
    print(f"reference: {len(outcomes.table):,} outcomes, {len(pairs):,} measured (source, target) pairs in "
          f"{len(outcomes.scenarios)} scenarios")
    matrices = {TRACK_RECORD: track_record_matrices(ref, distances, outcomes=outcomes, group_out=args.group_out),
                BASE: distances, "manual": ref.manual_matrix()}
    everything = {**matrices, GLOBAL: track_record_matrices(ref, distances, outcomes=outcomes,
                                                            group_out=args.group_out, neighbourhoods=(None,))}
    for entry in args.selector:
        name, _, path = entry.partition("=")
        matrices[name] = read_distance_matrix(path)
    table = comparison(ref, matrices, args.bootstraps, args.seed)
    print(f"\n1. leave-one-target-out on the 43 validation targets ({time.perf_counter() - started:.0f} s); "
          f"mean [95 % bootstrap interval over targets]")
    print(f"{'selector':<20} {'scenario':<13} {'win rate %':>22} {'top-3 percentile':>22} {'weighted tau':>22} "
          f"{'regret':>22}")
    for row in table.itertuples():
        cells = [f"{getattr(row, c):7.3f} [{getattr(row, c + '_low'):6.3f}, {getattr(row, c + '_high'):6.3f}]"
                 if c != "win" else f"{row.win:6.2f} [{row.win_low:5.1f}, {row.win_high:5.1f}]"
                 for c in ("win", "percentile", "weightedtau", "regret")]
        print(f"{row.selector:<20} {row.scenario:<13} " + " ".join(f"{c:>22}" for c in cells))
    means = table.groupby("selector", sort=False)["win"].mean()
    print("mean win rate %: " + ", ".join(f"{s} {v:.2f}" for s, v in means.items()))
    rates = mean_win_rates(ref, {GLOBAL: everything[GLOBAL], BASE: distances, "manual": matrices["manual"]})
    print(f"the global-record rule in the same three-way comparison: {rates[GLOBAL]['mean']:.2f} % "
          f"({', '.join(f'{s} {rates[GLOBAL][s]:.1f}' for s in scenario_names())})")
    firsts = first_suggestions(ref, everything, outcomes, args.bootstraps, args.seed)
    print("\n1b. does the advice depend on the target? first suggestions over the validation targets")
    print(f"{'selector':<22} {'scenario':<13} {'distinct firsts':>16} {'most frequent first (share)':>52} "
          f"{'gain of the first [95 %]':>28}")
    for row in firsts.itertuples():
        print(f"{row.selector:<22} {row.scenario:<13} {f'{row.distinct} of {row.targets}':>16} "
              f"{f'{row.most} ({row.share:.0%})':>52} "
              f"{f'{row.gain:+.4f} [{row.gain_low:+.4f}, {row.gain_high:+.4f}]':>28}")

    development = Outcomes(table=outcomes.table[outcomes.table["t"].isin(ref.development)], groups=outcomes.groups)
    young = track_record_matrices(ref, distances, outcomes=development)
    rates = mean_win_rates(ref, {TRACK_RECORD: young, BASE: distances, "manual": matrices["manual"]})
    print("\n3. fitted on the development targets' outcomes only: "
          + ", ".join(f"{s} {r['mean']:.2f} %" for s, r in rates.items()))

    rng = np.random.default_rng(args.seed)
    growth = []
    for fraction in args.fractions:
        for draw in range(args.draws if fraction < 1 else 1):
            sample = outcomes.subsample(fraction, rng) if fraction < 1 else outcomes
            learned = track_record_matrices(ref, distances, outcomes=sample)
            rates = mean_win_rates(ref, {TRACK_RECORD: learned, BASE: distances})
            growth.append({"fraction": fraction, "draw": draw, "pairs": int(round(fraction * len(pairs))),
                           **{f"{TRACK_RECORD} {s}": rates[TRACK_RECORD][s] for s in [*scenario_names(), "mean"]},
                           "distance mean": rates[BASE]["mean"]})
            print(f"  {fraction:5.0%} of the pairs, draw {draw}: track-record {rates[TRACK_RECORD]['mean']:.2f} % "
                  f"vs {BASE} {rates[BASE]['mean']:.2f} % ({time.perf_counter() - started:.0f} s)", flush=True)
    curve = pd.DataFrame(growth)
    summary = curve.groupby(["fraction", "pairs"])[[f"{TRACK_RECORD} mean", "distance mean"]].agg(["mean", "min",
                                                                                                  "max"])
    print("\n2. growth: head to head with bKLD(small,target), mean win rate % over the four scenarios")
    print(summary.round(2).to_string())
    log(args.tracking_uri, table, curve, time.perf_counter() - started, firsts)


def log(uri: str, table: pd.DataFrame, curve: pd.DataFrame, seconds: float, firsts: pd.DataFrame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("tfp-benchmarks")
    with mlflow.start_run(run_name="selector"), tempfile.TemporaryDirectory() as tmp:
        for row in table.itertuples():
            mlflow.log_metric(f"win_rate.{row.selector}.{row.scenario}", row.win)
        mlflow.log_metric("seconds", seconds)
        for row in firsts.itertuples():
            mlflow.log_metric(f"distinct_firsts.{row.selector}.{row.scenario}", row.distinct)
            mlflow.log_metric(f"first_gain.{row.selector}.{row.scenario}", row.gain)
        figure, axis = plt.subplots(figsize=(6, 4))
        grouped = curve.groupby("pairs")
        for column, label in ((f"{TRACK_RECORD} mean", TRACK_RECORD), ("distance mean", BASE)):
            mean = grouped[column].mean()
            axis.errorbar(mean.index, mean.values, yerr=[mean - grouped[column].min(), grouped[column].max() - mean],
                          marker="o", capsize=3, label=label)
        axis.set_xscale("log")
        axis.set_xlabel("measured (source, target) pairs the learned selector saw")
        axis.set_ylabel("mean win rate % (head to head)")
        axis.legend()
        figure.tight_layout()
        path = Path(tmp) / "selector-growth.png"
        figure.savefig(path, dpi=120)
        mlflow.log_artifact(str(path))
        table.to_csv(Path(tmp) / "selector-comparison.csv", index=False)
        curve.to_csv(Path(tmp) / "selector-growth.csv", index=False)
        firsts.to_csv(Path(tmp) / "selector-first-suggestions.csv", index=False)
        mlflow.log_artifacts(tmp)
    print(f"logged to {uri} (experiment tfp-benchmarks, run selector)")


if __name__ == "__main__":
    main()
