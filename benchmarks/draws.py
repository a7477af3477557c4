"""How many draws a query needs: the ranking from n draws of the target against the ranking from 10,000.

Sources: the demo's task families (2 per family, 90 images of 48 px), fingerprinted once with 1,000 draws and the
shipped spec. Targets: held-out tasks of several families (90 images) and tasks of few images (10). For each
target the features of 10,000 draws are computed once; a fingerprint of n draws uses n of them chosen at random
without replacement, which is the same as n independent draws (each draw is an independent, seeded choice of
image, crop and flip). Reported per n: Kendall tau between the bkld-small-target ranking from n draws and from
10,000 (all sources), the overlap of their top 3, and the time extracting n draws takes here (the measured
throughput of the 10,000-draw run, plus the measured start-up of a run).

    python benchmarks/draws.py                  # 3 targets of 90 images and 2 of 10 (about 25 minutes on 2 CPU cores)
    python benchmarks/draws.py --quick          # 1 + 1 targets, 3,000 draws at most
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.stats

from tfp_mlflow import FingerprintBuilder, Task, default_spec, rank_sources
from tfp_mlflow.demo.cloud import DEFAULT_PLAN, held_out_task, source_tasks
from tfp_mlflow.demo.tasks import DemoTask
from tfp_mlflow.extract import Draws, fingerprint_dataset, load_backbone
from tfp_mlflow.extract.datasets import open_dataset
from tfp_mlflow.extract.pipeline import iter_features, plan_draws

DRAWS = (100, 300, 1000, 3000, 10_000)


def features_of(folder: Path, samples: int, backbone, spec) -> tuple[np.ndarray, float]:
    dataset = open_dataset(folder, split="train")
    plan = plan_draws(len(dataset), samples, 0, spec.resize, backbone.input_size)
    started = time.perf_counter()
    batches = [f for f, _ in iter_features(dataset, backbone, plan, resize=spec.resize, batch_size=64, workers=1)]
    return np.concatenate(batches), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="Random subsets per n.")
    args = parser.parse_args()
    draws = tuple(n for n in DRAWS if n <= (3000 if args.quick else 10_000))
    spec, backbone = default_spec(), load_backbone("tf_efficientnet_lite0", device="cpu")
    root = Path(tempfile.mkdtemp(prefix="tfp-draws-"))
    sources = []
    for task in source_tasks(DEFAULT_PLAN):
        folder = task.write(root / task.name)
        fp = fingerprint_dataset(folder, spec=spec, progress=False, backbone=backbone, draws=Draws(samples=1000,
                                                                                                   workers=1))
        sources.append(Task.from_fingerprint(fp))
    families = ("radiograph", "fundus", "dermoscopy")[: 1 if args.quick else 3]
    targets = [held_out_task(f, DEFAULT_PLAN) for f in families]
    targets += [DemoTask(f"{f}_few", f, num_classes=2, num_images=10, image_size=48, seed=77 + i)
                for i, f in enumerate(("histology", "endoscopy")[: 1 if args.quick else 2])]
    rows, seconds_per_draw, startup = [], [], []
    rng = np.random.default_rng(0)
    for target in targets:
        folder = target.write(root / target.name)
        _few, few_seconds = features_of(folder, 64, backbone, spec)
        features, seconds = features_of(folder, max(draws), backbone, spec)
        seconds_per_draw.append((seconds - few_seconds) / (max(draws) - 64))
        startup.append(max(few_seconds - 64 * seconds_per_draw[-1], 0.0))

        def ranking(sample: np.ndarray) -> list[str]:
            builder = FingerprintBuilder(spec)
            builder.update(sample)
            fp = builder.build(name=target.name, keywords=(), num_images=target.num_images, num_classes=2)
            return [r.name for r in rank_sources("bkld-small-target", Task.from_fingerprint(fp), sources)]

        reference = ranking(features)
        position = {name: i for i, name in enumerate(reference)}
        for n in draws[:-1]:
            for _ in range(args.repeats):
                order = ranking(features[rng.choice(len(features), n, replace=False)])
                tau = scipy.stats.kendalltau([position[name] for name in order], range(len(order)))[0]
                rows.append((target.num_images, n, tau, len(set(order[:3]) & set(reference[:3])) / 3))
    per_draw, start = float(np.median(seconds_per_draw)), float(np.median(startup))
    print(f"{len(sources)} sources (1,000 draws each); targets: {', '.join(t.name for t in targets)}; "
          f"{args.repeats} random subsets per n; 2-core CPU: {1 / per_draw:.1f} draws/s, start-up {start:.1f} s")
    print(f"{'images':>6} {'draws':>6} {'Kendall tau':>11} {'top-3 overlap':>13} {'extraction s':>12}")
    for images in sorted({r[0] for r in rows}, reverse=True):
        for n in draws:
            chosen = [r for r in rows if r[0] == images and r[1] == n]
            tau = np.mean([r[2] for r in chosen]) if chosen else 1.0
            overlap = np.mean([r[3] for r in chosen]) if chosen else 1.0
            print(f"{images:>6} {n:>6,} {tau:>11.3f} {overlap:>13.2f} {start + n * per_draw:>12.0f}")


if __name__ == "__main__":
    main()
