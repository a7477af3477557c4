"""One target against N sources (m = 1280 features): the vectorised bKLD query against a per-pair loop.

The loop is written the way the authors' code computes bKLD: for every pair, normalise, softmax the source,
take the log ratio, weight and sum. Both run in this one process on the same fingerprints. Peak memory of the
vectorised path (prepare + query, traced with tracemalloc, which sees numpy's buffers) is compared with the bytes
of the sources' int64 counts themselves.

    python benchmarks/query.py            # full run: N = 100, 1000 (large and small) and 5000 (small)
    python benchmarks/query.py --quick    # N = 100 only
"""
from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc

import numpy as np

from tfp_mlflow import Fingerprint, Task, get_selector

M = 1280
DRAWS = 10_000
BASES = 8


class LazySources:
    """N distinct source tasks made on access from a few base fingerprints (rolled along the bins)."""

    def __init__(self, count: int, bins: int, variant: str) -> None:
        rng = np.random.default_rng(0)
        self.count, self.variant, self.bases = count, variant, []
        for _ in range(BASES):
            probabilities = rng.dirichlet(np.full(bins, 0.3), size=M)
            counts = rng.multinomial(DRAWS, probabilities)
            self.bases.append((counts, rng.gamma(2.0, 1.0, size=M) * DRAWS))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Task:
        if index >= self.count:
            raise IndexError(index)
        counts, sums = self.bases[index % BASES]
        fingerprint = Fingerprint(counts={self.variant: np.roll(counts, index // BASES, axis=1)},
                                  feature_sum=sums, num_draws=DRAWS, spec_id="bench", name=f"source{index}",
                                  num_images=1000 + index)
        return Task.from_fingerprint(fingerprint)


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


def run(selector_name: str, count: int, loop_limit: int) -> dict:
    selector = get_selector(selector_name)
    variant, bins = ("small", 100) if "small" in selector_name else ("large", 1000)
    sources = LazySources(count, bins, variant)
    target = LazySources(BASES + 1, bins, variant)[BASES]  # a rolled base: not one of the first sources
    counts_bytes = count * M * bins * 8
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    prepared = selector.prepare(sources)
    prepare_s = time.perf_counter() - started
    times = []
    for _ in range(3):
        started = time.perf_counter()
        distances = selector.distances(target, prepared)
        times.append(time.perf_counter() - started)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    query_s = statistics.median(times)
    # Check the vectorised numbers against the loop's on a few sources before timing the loop.
    loop_s = per_pair_loop(target, sources, variant, selector.weighting, min(loop_limit, count))
    del prepared
    gc.collect()
    return {"selector": selector_name, "N": count, "prepare_s": prepare_s, "query_ms": 1e3 * query_s,
            "loop_ms": 1e3 * loop_s * count, "speedup": loop_s * count / query_s,
            "peak_over_counts": peak / counts_bytes, "counts_gb": counts_bytes / 1e9,
            "loop_measured_on": min(loop_limit, count), "finite": bool(np.isfinite(distances).all())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only N = 100")
    parser.add_argument("--loop-limit", type=int, default=200,
                        help="time the per-pair loop on at most this many sources (it is linear in N)")
    args = parser.parse_args()
    plan = [("bkld-small-target", 100), ("bkld-large-source", 100), ("bkld-large-unweighted", 100)]
    if not args.quick:
        plan += [("bkld-small-target", 1000), ("bkld-large-source", 1000), ("bkld-large-unweighted", 1000),
                 ("bkld-small-target", 5000)]
    header = (f"{'selector':<22} {'N':>5} {'counts GB':>9} {'prepare s':>9} {'query ms':>9} {'loop ms':>9} "
              f"{'speedup':>8} {'peak/counts':>11}")
    print(f"one target against N sources, m = {M}, {DRAWS:,} draws per fingerprint")
    print(header)
    print("-" * len(header))
    for selector_name, count in plan:
        r = run(selector_name, count, args.loop_limit)
        note = "" if r["loop_measured_on"] == count else f"  (loop timed on {r['loop_measured_on']}, x{count // r['loop_measured_on']})"
        print(f"{r['selector']:<22} {r['N']:>5} {r['counts_gb']:>9.2f} {r['prepare_s']:>9.1f} {r['query_ms']:>9.1f} "
              f"{r['loop_ms']:>9.0f} {r['speedup']:>7.0f}x {r['peak_over_counts']:>10.2f}x{note}", flush=True)


if __name__ == "__main__":
    main()
