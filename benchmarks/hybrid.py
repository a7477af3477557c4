"""A mixed cloud, simulated on the reference: which rule merges a fingerprint ranking and a keyword ranking best?

For each share of sources with fingerprints (random subsets, several repeats), the sources with fingerprints are
ranked by the shipped bKLD(small,target) distances and the others by keywords (manual); each merge rule makes one
ranking. All are scored together with the paper's protocol (43 validation targets): mean win rate over the four
scenarios (ties count for every tied selector) and the share of targets improved by the best of the top 1 and 3.

    python benchmarks/hybrid.py                     # fractions 0.1 0.25 0.5 0.75 0.9, 5 repeats (about 6 minutes)
    python benchmarks/hybrid.py --repeats 2 --fractions 0.5
"""
from __future__ import annotations

import argparse
import time

from tfp_mlflow.evaluation.hybrid import simulate_mixed_cloud
from tfp_mlflow.reference import Reference, bundled_reference, read_distance_matrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25, 0.5, 0.75, 0.9])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ref = Reference.load(bundled_reference())
    by_fingerprint = read_distance_matrix(ref.distance_files()["bkld-small-target"])
    started = time.perf_counter()
    rows, _ = simulate_mixed_cloud(ref, by_fingerprint, args.fractions, args.repeats, seed=args.seed)
    table = rows.groupby(["fraction", "selector"], sort=False)[["win_rate", "improved_k1", "improved_k3"]].mean()
    best = rows.loc[rows.groupby(["fraction", "repeat"])["win_rate"].idxmax()]
    firsts = best.groupby("fraction")["selector"].value_counts().rename("repeats won")
    print(f"mixed cloud simulated on the reference: {args.repeats} repeats per fraction, "
          f"{time.perf_counter() - started:.0f} s")
    print(f"{'fingerprinted':>13} {'selector':<26} {'win rate %':>10} {'improved@1 %':>12} {'improved@3 %':>12}")
    for (fraction, selector), row in table.iterrows():
        print(f"{fraction:>13.2f} {selector:<26} {row.win_rate:>10.2f} {row.improved_k1:>12.2f} "
              f"{row.improved_k3:>12.2f}")
    print("\nhighest mean win rate per repeat:")
    print(firsts.to_string())


if __name__ == "__main__":
    main()
