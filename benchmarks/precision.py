"""How far mixed precision moves a fingerprint: the same draws extracted at 32, bf16-mixed and 16-mixed.

Fingerprints of synthetic tasks from three families (the same seed, so the same crops) are made once per
precision. For each mixed precision against 32, per histogram variant: the mean and largest share of a feature's
draws that landed in another bin (half the L1 distance of the two histograms, the mass that moved), the bKLD
(small, target) distances of each task to the others and their largest relative change, whether every task's
ranking of the others is unchanged, and the extraction time (on this machine; a GPU's speed-up is what mixed
precision is for: measure it there with ``--device cuda``). The yardstick is the draw itself: the same figures for
full precision with another seed (other crops of the same images).

    python benchmarks/precision.py [--draws 300] [--tasks 6] [--device cpu] [--log URI]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from tfp_mlflow import Task, get_selector
from tfp_mlflow.demo.tasks import DemoTask
from tfp_mlflow.extract import Draws, fingerprint_dataset, load_backbone
from tfp_mlflow.extract.pipeline import PRECISIONS
from tfp_mlflow.spec import default_spec

FAMILIES = ("fundus", "dermoscopy", "natural")


def moved(a, b, variant: str) -> np.ndarray:
    """Per feature: the share of draws in another bin (half the L1 distance of the normalised histograms)."""
    return 0.5 * np.abs(a.histogram(variant) - b.histogram(variant)).sum(axis=1)


def distances(fingerprints: list) -> np.ndarray:
    """bKLD(small, target) of every task (as target) to every other (as source); the diagonal is NaN."""
    selector = get_selector("bkld-small-target")
    tasks = [Task.from_fingerprint(f) for f in fingerprints]
    out = np.full((len(tasks), len(tasks)), np.nan)
    for i, target in enumerate(tasks):
        others = [t for j, t in enumerate(tasks) if j != i]
        out[i, [j for j in range(len(tasks)) if j != i]] = selector.distances(target, others)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--tasks", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--log", default=None, help="MLflow tracking URI to log the figures to")
    args = parser.parse_args()
    import torch

    spec = default_spec()
    backbone = load_backbone(spec.backbone, None, torch.device(args.device))
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folders = [DemoTask(f"{FAMILIES[i % 3]}_{i}", FAMILIES[i % 3], num_classes=2, num_images=40, image_size=96,
                            seed=i).write(Path(tmp) / f"task{i}") for i in range(args.tasks)]
        for label, precision, seed in [(p, p, 0) for p in PRECISIONS] + [("32, seed 1", "32", 1)]:
            started = time.perf_counter()
            made = [fingerprint_dataset(folder, spec=spec, progress=False, backbone=backbone,
                                        draws=Draws(samples=args.draws, device=args.device, precision=precision,
                                                    workers=0, seed=seed))
                    for folder in folders]
            results[label] = {"fingerprints": made, "seconds": time.perf_counter() - started,
                              "distances": distances(made)}
            print(f"{label}: {args.tasks} fingerprints of {args.draws} draws in {results[label]['seconds']:.1f} s",
                  flush=True)
    full = results["32"]
    rows = []
    print(f"\n{'precision':>12} {'variant':>7} {'moved mean %':>12} {'moved max %':>11} {'bKLD max rel. change':>20} "
          f"{'rankings equal':>14} {'time vs 32':>10}")
    for precision in [*PRECISIONS[1:], "32, seed 1"]:
        mine = results[precision]
        change = np.nanmax(np.abs(mine["distances"] - full["distances"]) / np.abs(full["distances"]))
        same = all(np.array_equal(np.argsort(np.nan_to_num(a, nan=np.inf)), np.argsort(np.nan_to_num(b, nan=np.inf)))
                   for a, b in zip(mine["distances"], full["distances"]))
        for variant in spec.variants:
            shares = np.concatenate([moved(a, b, variant) for a, b in zip(mine["fingerprints"], full["fingerprints"])])
            row = {"precision": precision, "variant": variant, "moved_mean": float(shares.mean()),
                   "moved_max": float(shares.max()), "bkld_max_relative_change": float(change),
                   "rankings_equal": same, "time_ratio": mine["seconds"] / full["seconds"]}
            rows.append(row)
            print(f"{precision:>12} {variant:>7} {100 * row['moved_mean']:>12.2f} {100 * row['moved_max']:>11.2f} "
                  f"{change:>20.2e} {same!s:>14} {row['time_ratio']:>10.2f}")
    if args.log:
        import mlflow

        mlflow.set_tracking_uri(args.log)
        mlflow.set_experiment("tfp-benchmarks")
        with mlflow.start_run(run_name="precision"):
            mlflow.log_params({"draws": args.draws, "tasks": args.tasks, "device": args.device})
            for row in rows:
                prefix = f"{row['precision']}_{row['variant']}_"
                mlflow.log_metrics({prefix + "moved_mean": row["moved_mean"], prefix + "moved_max": row["moved_max"],
                                    prefix + "bkld_max_relative_change": row["bkld_max_relative_change"],
                                    prefix + "time_ratio": row["time_ratio"]})


if __name__ == "__main__":
    main()
