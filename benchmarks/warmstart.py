"""Warm-started vs cold `tfp tune` studies on held-out synthetic tasks (the product's claim, measured).

The cloud is built as in `tfp demo`: source tasks of several domain families, fingerprinted and contributed, each
with knowledge measured by a short study of its own, plus the published 71-task knowledge (whose policies are the
candidate policies). Then, for every held-out task (one new task per family) and seed, a warm-started study
(the recommender's top-k enqueued first) and a cold one (TPE alone) run with the same space, trial budget and
sampler seed. Printed: best held-out balanced accuracy after 1, 3, 5 and 10 trials, and the trials each needs to
reach the cold study's final best, averaged over tasks and seeds.

    .venv/bin/python benchmarks/warmstart.py                 # about 30 minutes on 2 CPU cores
    .venv/bin/python benchmarks/warmstart.py --families fundus,histology --seeds 1 --trials 5   # a smoke run
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="radiograph,fundus,histology,dermoscopy")
    parser.add_argument("--sources-per-family", type=int, default=2)
    parser.add_argument("--knowledge-trials", type=int, default=4)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--home", default=None, help="Keep the cloud and studies here (default: a temp folder).")
    parser.add_argument("--json", default=None, help="Also write the raw curves to this file.")
    args = parser.parse_args()

    from rich.console import Console

    from tfp_mlflow.cloud.reference_import import import_reference
    from tfp_mlflow.cloud.store import Cloud
    from tfp_mlflow.demo.cloud import (
        DEFAULT_PLAN,
        contribute_task,
        demo_space,
        held_out_task,
        measure_knowledge,
        source_tasks,
    )
    from tfp_mlflow.extract import load_backbone
    from tfp_mlflow.recommend import recommend
    from tfp_mlflow.reference import Reference, bundled_reference
    from tfp_mlflow.train import TrainConfig
    from tfp_mlflow.tune import StudyPlan, run_study

    console = Console(stderr=True)
    started = time.perf_counter()
    home = Path(args.home or tempfile.mkdtemp(prefix="tfp-warmstart-"))
    plan = replace(DEFAULT_PLAN, families=tuple(args.families.split(",")),
                   sources_per_family=args.sources_per_family, knowledge_trials=args.knowledge_trials)
    cloud = Cloud(f"sqlite:///{home / 'mlflow.db'}")
    storage = f"sqlite:///{home / 'optuna.db'}"
    import_reference(cloud, Reference.load(bundled_reference()))
    backbone = load_backbone("tf_efficientnet_lite0", device="cpu")
    space = demo_space(cloud, plan)
    for task in source_tasks(plan):
        path, _ = contribute_task(cloud, task, home / "tasks", backbone, plan)
        measure_knowledge(cloud, task, path, space, plan, storage)
        console.print(f"source {task.name}: knowledge measured ({time.perf_counter() - started:.0f} s)")
    built = time.perf_counter() - started

    curves: dict[str, list[list[float]]] = {"warm": [], "cold": []}
    for family in plan.families:
        target = held_out_task(family, plan)
        path, fingerprint = contribute_task(cloud, target, home / "tasks", backbone, plan, contribute=False)
        rec = recommend(cloud, fingerprint, name=target.name, top_k=args.top_k, log=False).to_json()
        base = TrainConfig(target=str(path), name=target.name, image_size=plan.image_size, batch_size=16)
        for seed in range(args.seeds):
            for mode in ("warm", "cold"):
                plan_ = StudyPlan(f"{mode}-{target.name}-{seed}", storage, n_trials=args.trials, top_k=args.top_k,
                                  seed=seed, contribute=False)
                result = run_study(replace(base, seed=seed), cloud, space, plan_,
                                   recommendation=rec if mode == "warm" else None)
                values = [t["value"] if t["state"] == "COMPLETE" else 0.0 for t in result.trials][:args.trials]
                curves[mode].append(list(np.maximum.accumulate(values)))
                console.print(f"{target.name} seed {seed} {mode}: best {curves[mode][-1][-1]:.3f} "
                              f"({time.perf_counter() - started:.0f} s)")

    report(curves, args.trials)
    print(f"\n{len(curves['warm'])} (task, seed) pairs; cloud built in {built / 60:.1f} min, "
          f"total {(time.perf_counter() - started) / 60:.1f} min on this machine")
    if args.json:
        Path(args.json).write_text(json.dumps({"curves": curves, "plan": plan.__dict__}, indent=1, default=str))


def trials_to_reach(curve: list[float], level: float) -> int:
    """1-based trial at which the best-so-far first reaches ``level`` (len + 1 when it never does)."""
    return next((i + 1 for i, value in enumerate(curve) if value >= level - 1e-12), len(curve) + 1)


def report(curves: dict[str, list[list[float]]], budget: int) -> None:
    checkpoints = [n for n in (1, 3, 5, 10) if n <= budget]
    warm, cold = np.array(curves["warm"]), np.array(curves["cold"])
    reach = {"warm": [trials_to_reach(w, c[-1]) for w, c in zip(warm, cold)],
             "cold": [trials_to_reach(c, c[-1]) for c in cold]}
    print("\nbest held-out balanced accuracy after N trials (mean over tasks and seeds)")
    print(f"{'study':<6}" + "".join(f"{f'N={n}':>9}" for n in checkpoints) + f"{'trials to cold best':>22}")
    for mode, array in (("warm", warm), ("cold", cold)):
        print(f"{mode:<6}" + "".join(f"{array[:, n - 1].mean():>9.3f}" for n in checkpoints)
              + f"{np.mean(reach[mode]):>22.2f}")
    print("warm/cold ratio " + " ".join(f"N={n}: {warm[:, n - 1].mean() / cold[:, n - 1].mean():.3f}"
                                          for n in checkpoints)
          + f"; trials to cold best: {np.mean(reach['warm']) / np.mean(reach['cold']):.2f}"
          + f" (warm never reached it in {sum(r > budget for r in reach['warm'])} of {len(reach['warm'])})")


if __name__ == "__main__":
    main()
