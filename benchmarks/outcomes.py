"""The first recommendation after one new outcome table, against a warm one, on a cloud full of outcomes.

A SQLite cloud with ``--tasks`` fingerprinted tasks (synthetic fingerprints with the shipped spec's shape) and
``--targets`` of them measured as targets: one pretraining outcome table per target with a row per source
(``--tasks`` rows, so 100 targets x 1,000 tasks = 100,000 outcome rows) and its baseline. Then, ``--repeats``
times: a warm recommendation, one new outcome table (a new target's, by its owner), and the first
recommendation after it. Prints p50 of each and the difference, which should stay within a second.

    python benchmarks/outcomes.py [--tasks 1000] [--targets 100] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.cloud import fake_fingerprint
from tfp_mlflow import default_spec
from tfp_mlflow.cloud import Cloud
from tfp_mlflow.cloud.knowledge import Knowledge, KnowledgeRow
from tfp_mlflow.cloud.schema import KnowledgeKind
from tfp_mlflow.recommend import recommend


def outcome_table(target: str, sources: list[str], rng: np.random.Generator) -> list[Knowledge]:
    """A target's baseline and its pretraining outcomes from every other source."""
    base = float(rng.uniform(0.5, 0.8))
    rows = tuple(KnowledgeRow(source=s, repetition=0, balanced_accuracy=float(np.clip(base + rng.normal(0, 0.03),
                                                                                        0, 1)), held_out=200)
                 for s in sources if s != target)
    return [Knowledge(task=target, kind=KnowledgeKind.BASELINE,
                      rows=(KnowledgeRow(repetition=0, balanced_accuracy=base, held_out=200),)),
            Knowledge(task=target, kind=KnowledgeKind.PRETRAINING, rows=rows)]


def timed(cloud: Cloud, query) -> float:
    started = time.perf_counter()
    recommend(cloud, query, log=False, scenarios=["pretraining"])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--keep", type=Path, default=None, help="build the cloud in this folder once, reuse it after")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        built = (folder / "cloud.db").is_file()
        cloud = Cloud(f"sqlite:///{folder / 'cloud.db'}", cache_dir=folder / "cache")
        started = time.perf_counter()
        if not built:
            cloud.ensure_spec(default_spec())
            for i in range(args.tasks):
                cloud.contribute(fake_fingerprint(i, args.draws, rng))
        names = sorted(t.name for t in cloud.tasks())
        if not built:
            for target in names[:args.targets]:
                for knowledge in outcome_table(target, names, rng):
                    cloud.add_knowledge(knowledge)
        print(f"{len(names):,} tasks, {args.targets * (len(names) - 1):,} outcome rows on {args.targets} targets "
              f"(built in {time.perf_counter() - started:.0f} s)")
        query = fake_fingerprint(99_999, args.draws, rng)
        # New content every run, also on a kept cloud (the same table again would be stored once: no new run).
        rng = np.random.default_rng(time.time_ns())
        timed(cloud, query)   # the state a server holds after its first query
        warm, after = [], []
        for repeat in range(args.repeats):
            warm.append(timed(cloud, query))
            for knowledge in outcome_table(names[int(rng.integers(args.targets, len(names)))], names, rng):
                cloud.add_knowledge(knowledge)
            after.append(timed(cloud, query))
            print(f"  repeat {repeat + 1}: warm {warm[-1]:.2f} s, first after one outcome table {after[-1]:.2f} s",
                  flush=True)
    w, a = statistics.median(warm), statistics.median(after)
    print(f"\n| query | p50 s |\n|---|---|\n| warm | {w:.2f} |\n| first after one new outcome table | {a:.2f} |"
          f"\n| difference | {a - w:+.2f} |")


if __name__ == "__main__":
    main()
