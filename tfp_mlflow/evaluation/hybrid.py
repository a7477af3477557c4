"""A mixed cloud, simulated on the reference: only a share of the sources have fingerprints. Their distances are
the shipped bKLD(small,target) ones, the others are ranked by keywords (``manual``), and each merge rule of
:func:`tfp_mlflow.ranking.merge_rankings` makes one ranking of both. The protocol (docs/method.md §6) then scores
every rule against bKLD alone (fingerprinted sources only) and manual alone (``benchmarks/hybrid.py``)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from tfp_mlflow.evaluation.protocol import Evaluation, evaluate
from tfp_mlflow.ranking import MERGE_RULES, merge_rankings
from tfp_mlflow.reference import Reference

__all__ = ["hybrid_distances", "fingerprinted_subset", "simulate_mixed_cloud"]


def fingerprinted_subset(names: Sequence[str], fraction: float, rng: np.random.Generator) -> set[str]:
    """A random ``fraction`` of ``names`` (at least one): the tasks that have fingerprints."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    count = max(1, round(fraction * len(names)))
    return set(rng.choice(sorted(names), size=count, replace=False).tolist())


def hybrid_distances(by_fingerprint: pd.DataFrame, by_keywords: pd.DataFrame, fingerprinted: set[str],
                     rule: str) -> pd.DataFrame:
    """Per target column, the merged ranking's positions (1 = best) as distances; rows sources, columns targets."""
    out = pd.DataFrame(np.nan, index=by_keywords.index, columns=by_keywords.columns)
    for target in by_keywords.columns:
        def ranked(matrix: pd.DataFrame, keep) -> list[tuple[str, float]]:
            column = matrix[target].reindex(out.index)
            usable = column[[keep(s) and np.isfinite(column[s]) and column[s] != 0 for s in column.index]]
            return list(usable.sort_values(kind="stable").items())
        merged = merge_rankings(ranked(by_fingerprint, lambda s: s in fingerprinted),
                                ranked(by_keywords, lambda s: s not in fingerprinted), rule)
        out.loc[[name for name, _ in merged], target] = np.arange(1, len(merged) + 1, dtype=np.float64)
    return out


def simulate_mixed_cloud(ref: Reference, by_fingerprint: pd.DataFrame, fractions: Sequence[float],
                         repeats: int, seed: int = 0, rules: Sequence[str] = MERGE_RULES
                         ) -> tuple[pd.DataFrame, dict[tuple[float, int], Evaluation]]:
    """Score every merge rule, bKLD alone and manual alone on simulated mixed clouds.

    Returns one row per (fraction, repeat, selector) with its mean win rate over the four scenarios and its share
    of targets improved at k = 1 and k = 3 (best of top k, balanced accuracy, mean over scenarios), and the
    evaluations themselves.
    """
    by_keywords = ref.manual_matrix()
    rng = np.random.default_rng(seed)
    rows, evaluations = [], {}
    for fraction in fractions:
        for repeat in range(repeats):
            fingerprinted = fingerprinted_subset(list(by_keywords.index), fraction, rng)
            alone = by_fingerprint.copy()
            alone.loc[~alone.index.isin(sorted(fingerprinted))] = np.nan     # bKLD alone sees only these
            selectors = {"bkld alone": alone, "manual": by_keywords}
            selectors.update({f"hybrid {rule}": hybrid_distances(by_fingerprint, by_keywords, fingerprinted, rule)
                              for rule in rules})
            result = evaluate(ref, selectors, bootstraps=0)
            evaluations[(fraction, repeat)] = result
            wins, gains = result.win_rates(), result.gain_curve()
            for name in selectors:
                rows.append({"fraction": fraction, "repeat": repeat, "selector": name,
                             "win_rate": wins[name]["mean"],
                             "improved_k1": float(np.mean([curve[0] for curve in gains[name].values()])),
                             "improved_k3": float(np.mean([curve[2] for curve in gains[name].values()]))})
    return pd.DataFrame(rows), evaluations
