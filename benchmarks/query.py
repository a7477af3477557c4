"""One target against N sources (m = 1280 features): the compact integer stack against the dense float64 stack it
replaced, and both against a per-pair loop, as N grows.

For each selector and N, in this one process on the same fingerprints: prepare time, the median of 3 warm queries
and the peak memory of prepare plus query (tracemalloc, which sees numpy's buffers) of the compact path; the same
for the dense float64 path where its stack fits in ``--dense-limit-gb``; the largest relative difference between
their distances and whether the rankings agree; the stack's bytes per source; the per-pair loop in the style of
the authors' code (timed on at most 200 sources and scaled: it is linear in N). A log-log plot of query time and
peak memory against N is written next to the table (``--plot``) and, with ``--tracking-uri``, logged as an MLflow
artifact with the table.

Sources are distinct fingerprints of 10,000 draws made on access from 8 bases, either Dirichlet(0.3) histograms
(``--sources dirichlet``: most bins occupied, the compact path's worst case) or the shipped example fingerprints
(``--sources examples``: real backbone features of 300 draws, 7-9 % of the 1,000-bin variant occupied).

    python benchmarks/query.py --quick            # N = 100 only, about a minute
    python benchmarks/query.py                    # N to 10,000 (small) and 2,500 (large); about 40 minutes
"""
from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np

from tfp_mlflow import Fingerprint, Task, get_selector

M = 1280
DRAWS = 10_000
BASES = 8


class LazySources:
    """N distinct source tasks made on access from a few base fingerprints (rolled along the bins)."""

    def __init__(self, count: int, bins: int, variant: str, kind: str = "dirichlet") -> None:
        rng = np.random.default_rng(0)
        self.count, self.variant, self.bases = count, variant, []
        examples = sorted((Path(__file__).resolve().parents[1] / "tfp_mlflow" / "data" / "examples").glob("*.npz"))
        for index in range(BASES):
            if kind == "examples":
                fingerprint = Fingerprint.load(examples[index % len(examples)])
                counts = np.asarray(fingerprint.counts_of(variant))
                draws = fingerprint.num_draws
                if index >= len(examples):   # another draw of the same task
                    counts = np.stack([rng.multinomial(draws, row / draws) for row in counts])
                self.bases.append((counts, np.asarray(fingerprint.feature_sum), draws))
            else:
                probabilities = rng.dirichlet(np.full(bins, 0.3), size=M)
                self.bases.append((rng.multinomial(DRAWS, probabilities), rng.gamma(2.0, 1.0, size=M) * DRAWS,
                                   DRAWS))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Task:
        if index >= self.count:
            raise IndexError(index)
        counts, sums, draws = self.bases[index % BASES]
        fingerprint = Fingerprint(counts={self.variant: np.roll(counts, index // BASES, axis=1)},
                                  feature_sum=sums, num_draws=draws, spec_id="bench", name=f"source{index}",
                                  num_images=1000 + index)
        return Task.from_fingerprint(fingerprint)


class DenseFloat64:
    """The path the compact stack replaced: float64 histograms stacked (N, m b), source weights folded in."""

    def __init__(self, selector) -> None:
        self.variant, self.weighting = selector.variant, selector.weighting

    def prepare(self, sources) -> dict:
        stack = lse = weights = None
        for index in range(len(sources)):
            fingerprint = sources[index].fingerprint
            histogram = fingerprint.histogram(self.variant)
            if stack is None:
                stack = np.empty((len(sources), histogram.size))
                lse = np.empty((len(sources), histogram.shape[0]))
                weights = np.empty((len(sources), histogram.shape[0])) if self.weighting == "source-l1" else None
            lse[index] = np.log(np.exp(histogram).sum(axis=1))
            if weights is not None:
                weights[index] = fingerprint.means / fingerprint.means.sum()
                histogram = histogram * weights[index][:, None]
            stack[index] = histogram.ravel()
        return {"stack": stack, "lse": lse, "weights": weights}

    def distances(self, target: Task, prepared: dict) -> np.ndarray:
        from tfp_mlflow.selectors._base import xlogx

        p = target.fingerprint.histogram(self.variant)
        entropy = xlogx(p).sum(axis=1)
        if self.weighting == "source-l1":
            weights = prepared["weights"]
            return (weights @ entropy - prepared["stack"] @ p.ravel()
                    + np.einsum("nm,nm->n", weights, prepared["lse"]))
        if self.weighting == "uniform":
            w = np.full(p.shape[0], 1.0 / p.shape[0])
        else:
            mu = target.fingerprint.means
            w = np.exp(mu - mu.max())
            w /= w.sum()
        return entropy @ w - prepared["stack"] @ (p * w[:, None]).ravel() + prepared["lse"] @ w


def per_pair_loop(target: Task, sources: LazySources, variant: str, weighting: str, limit: int) -> float:
    """Seconds per source of the authors'-style loop, measured on the first ``limit`` sources."""
    p = target.fingerprint.counts[variant] / target.fingerprint.num_draws
    mu_t = target.fingerprint.means
    started = time.perf_counter()
    for index in range(limit):
        fp = sources[index].fingerprint
        q = fp.counts[variant] / fp.num_draws
        q = np.exp(q) / np.exp(q).sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_feature = np.nan_to_num(np.log(p / q) * p).sum(axis=1)
        if weighting == "target-softmax":
            w = np.exp(mu_t) / np.exp(mu_t).sum()
        elif weighting == "source-l1":
            w = fp.means / fp.means.sum()
        else:
            w = np.ones(M)
        _ = (per_feature * w).sum() / w.sum()
    return (time.perf_counter() - started) / limit


def measure(prepare, query, sources, target) -> tuple[object, float, float, float, np.ndarray]:
    """(prepared, prepare s, median query s, peak bytes, distances) of one path."""
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    prepared = prepare(sources)
    prepare_s = time.perf_counter() - started
    times = []
    for _ in range(3):
        started = time.perf_counter()
        distances = query(target, prepared)
        times.append(time.perf_counter() - started)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return prepared, prepare_s, statistics.median(times), peak, distances


def run(selector_name: str, count: int, loop_limit: int, dense_limit_gb: float, kind: str) -> dict:
    selector = get_selector(selector_name)
    variant, bins = ("small", 100) if "small" in selector_name else ("large", 1000)
    sources = LazySources(count, bins, variant, kind)
    target = LazySources(BASES + 1, bins, variant, kind)[BASES]  # a rolled base: not one of the first sources
    dense_bytes = count * M * bins * 8
    row = {"selector": selector_name, "N": count, "dense_gb": dense_bytes / 1e9}
    prepared, row["prepare_s"], query_s, peak, compact = measure(selector.prepare, selector.distances, sources,
                                                                 target)
    stack_bytes = sum(v.nbytes for k, v in prepared.arrays.items() if k.startswith("stack_"))
    row.update(query_ms=1e3 * query_s, peak_gb=peak / 1e9, bytes_per_source=stack_bytes / count,
               layout="sparse" if "stack_indices" in prepared.arrays else
               f"dense {prepared.arrays['stack_counts'].dtype}")
    del prepared
    if dense_bytes <= dense_limit_gb * 1e9:
        dense = DenseFloat64(selector)
        prepared, _, dense_s, dense_peak, reference = measure(dense.prepare, dense.distances, sources, target)
        del prepared
        row.update(dense_query_ms=1e3 * dense_s, dense_peak_gb=dense_peak / 1e9,
                   max_rel_diff=float(np.max(np.abs(compact - reference) / np.abs(reference))),
                   same_ranking=bool(np.array_equal(np.argsort(compact, kind="stable"),
                                                    np.argsort(reference, kind="stable"))))
    loop_s = per_pair_loop(target, sources, variant, selector.weighting, min(loop_limit, count))
    row.update(loop_ms=1e3 * loop_s * count, speedup=loop_s * count / query_s)
    gc.collect()
    return row


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in dict.fromkeys(r["selector"] for r in rows):
        mine = [r for r in rows if r["selector"] == name]
        n = [r["N"] for r in mine]
        left.plot(n, [r["query_ms"] for r in mine], "o-", label=f"{name} compact")
        right.plot(n, [r["peak_gb"] for r in mine], "o-", label=f"{name} compact")
        dense = [r for r in mine if "dense_query_ms" in r]
        if dense:
            left.plot([r["N"] for r in dense], [r["dense_query_ms"] for r in dense], "x--", label=f"{name} float64")
            right.plot([r["N"] for r in dense], [r["dense_peak_gb"] for r in dense], "x--",
                       label=f"{name} float64")
    for axis, label in ((left, "warm query (ms)"), (right, "peak memory, prepare + query (GB)")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("sources N")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)
    figure.suptitle(f"one target against N sources, m = {M}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only N = 100")
    parser.add_argument("--loop-limit", type=int, default=200,
                        help="time the per-pair loop on at most this many sources (it is linear in N)")
    parser.add_argument("--dense-limit-gb", type=float, default=8.0,
                        help="run the float64 path only where its stack takes at most this much")
    parser.add_argument("--sources", choices=("dirichlet", "examples"), default="dirichlet")
    parser.add_argument("--plot", default="query-growth.png", help="where to write the log-log plot")
    parser.add_argument("--tracking-uri", default=None, help="also log the table and plot to this MLflow store")
    parser.add_argument("--points", default=None, help="SELECTOR:N,... instead of the default plan")
    args = parser.parse_args()
    plan = [("bkld-small-target", 100), ("bkld-large-source", 100), ("bkld-large-unweighted", 100)]
    if not args.quick:
        plan = ([("bkld-small-target", n) for n in (100, 1000, 2500, 5000, 10_000)]
                + [(name, n) for name in ("bkld-large-source", "bkld-large-unweighted") for n in (100, 1000, 2500)])
    if args.points:
        plan = [(point.rpartition(":")[0], int(point.rpartition(":")[2])) for point in args.points.split(",")]
    print(f"one target against N sources, m = {M}, sources: {args.sources}")
    print("| selector | N | layout | bytes/source | query | peak | float64 query | float64 peak | max rel. diff "
          "| same ranking | per-pair loop | speedup vs loop |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for selector_name, count in plan:
        r = run(selector_name, count, args.loop_limit, args.dense_limit_gb, args.sources)
        rows.append(r)
        dense = (f"{r['dense_query_ms']:.0f} ms | {r['dense_peak_gb']:.2f} GB | {r['max_rel_diff']:.1e} | "
                 f"{'yes' if r['same_ranking'] else 'NO'}") if "dense_query_ms" in r else \
            f"not run (needs {r['dense_gb']:.1f} GB) | | |"
        print(f"| {r['selector']} | {r['N']:,} | {r['layout']} | {r['bytes_per_source'] / 1e3:,.0f} kB | "
              f"{r['query_ms']:.0f} ms | {r['peak_gb']:.2f} GB | {dense} | {r['loop_ms'] / 1e3:.1f} s | "
              f"{r['speedup']:.0f}x |", flush=True)
    path = plot(rows, Path(args.plot))
    print(f"plot: {path}")
    if args.tracking_uri:
        import mlflow

        mlflow.set_tracking_uri(args.tracking_uri)
        mlflow.set_experiment("tfp-benchmarks")
        with mlflow.start_run(run_name=f"query growth ({args.sources})"):
            mlflow.log_artifact(str(path))
            mlflow.log_table({k: [r.get(k) for r in rows] for k in rows[0]}, "query-growth.json")


if __name__ == "__main__":
    main()
