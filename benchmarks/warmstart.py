"""Cold, top-k and whole-study warm starts of `tfp tune` on held-out synthetic tasks (the product's claim, measured).

The cloud is built as in `tfp demo`: source tasks of several domain families, fingerprinted and contributed, each
with knowledge measured by a study of its own (whose every trial the cloud keeps), plus the published 71-task
knowledge (whose policies are the candidate policies). Then, for every held-out task (a new task per family, with
``--target-images`` images and a held-out split of ``--held-out`` of them, so one image is a small step) and seed,
four studies run with the same space, trial budget and sampler seed:

* ``cold``: TPE alone;
* ``top-k``: the recommender's top-k configurations enqueued first (``--transfer top-k``);
* ``studies``: top-k, and the nearest tasks' whole studies (``--transfer studies``, :mod:`tfp_mlflow.tune.transfer`);
* ``misled``: whole studies only, from the *farthest* source tasks (dissimilar by fingerprint);
* ``adversarial``: whole studies only, from one source study built to mislead: the cold study's own trials on this
  target and seed with their scores reversed, so its "best" configurations are the worst measured here.

``--modes`` picks some of them; rerunning with the same ``--home`` reuses every study already finished there (a
finished study is joined, not run again), so a new mode costs only its own studies.

Printed (Markdown for ``benchmarks/README.md``): best held-out balanced accuracy after 1, 3, 5 and the last trial,
and the trials each needs to reach the cold study's final best and 95 % of it, as means over (task, seed) pairs with
95 % bootstrap intervals.

    .venv/bin/python benchmarks/warmstart.py                 # about 75 minutes on 2 CPU cores (benchmarks/README.md)
    .venv/bin/python benchmarks/warmstart.py --families fundus,histology --seeds 1 --trials 4   # a smoke run
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

MODES = ("cold", "top-k", "studies", "misled", "adversarial")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="radiograph,fundus,histology,dermoscopy,endoscopy,natural",
                        help="families of the source tasks; the first --targets get a held-out task")
    parser.add_argument("--targets", type=int, default=4)
    parser.add_argument("--sources-per-family", type=int, default=1)
    parser.add_argument("--knowledge-trials", type=int, default=8)
    parser.add_argument("--target-images", type=int, default=250)
    parser.add_argument("--held-out", type=float, default=0.4, help="share of the target's images held out")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--policies", type=int, default=6)
    parser.add_argument("--classes", type=int, default=5,
                        help="classes of every task, 2-5 (0: the demo's 2-4; more classes make a harder task)")
    parser.add_argument("--epochs", default="2,4,6", help="epoch budgets searched (one value: fixed)")
    parser.add_argument("--image-sizes", default="32,48,64", help="image sides searched (one value: fixed)")
    parser.add_argument("--home", default=None, help="Keep the cloud and studies here (default: a temp folder).")
    parser.add_argument("--json", default=None, help="Also write the raw curves to this file.")
    parser.add_argument("--modes", default=",".join(MODES), help="which studies to run (cold always runs)")
    args = parser.parse_args()

    from rich.console import Console

    from tfp_mlflow.cloud.runs import configure_process
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
    from tfp_mlflow.recommendation import Recommendation
    from tfp_mlflow.reference import Reference, bundled_reference
    from tfp_mlflow.reference_import import import_reference
    from tfp_mlflow.train import TrainConfig
    from tfp_mlflow.tune import StudyPlan, run_study

    configure_process()
    console = Console(stderr=True)
    started = time.perf_counter()
    home = Path(args.home or tempfile.mkdtemp(prefix="tfp-warmstart-"))
    plan = replace(DEFAULT_PLAN, families=tuple(args.families.split(",")),
                   sources_per_family=args.sources_per_family, knowledge_trials=args.knowledge_trials,
                   policies=args.policies)
    cloud = Cloud(f"sqlite:///{home / 'mlflow.db'}")
    storage = f"sqlite:///{home / 'optuna.db'}"
    import_reference(cloud, Reference.load(bundled_reference()))
    backbone = load_backbone("tf_efficientnet_lite0", device="cpu")
    space = replace(demo_space(cloud, plan), epochs=_numbers(args.epochs), image_size=_numbers(args.image_sizes))
    harder = {"num_classes": args.classes} if args.classes else {}
    sources = [replace(task, **harder) for task in source_tasks(plan)]
    modes = ["cold", *[m for m in args.modes.split(",") if m in MODES and m != "cold"]]
    total = len(sources) * plan.knowledge_trials + args.targets * args.seeds * len(modes) * args.trials
    console.print(f"{total} trainings; about {total * 6 / 60:.0f} minutes on 2 CPU cores alone "
                  f"(space: {space.searched}, epochs {space.epochs}, image sides {space.image_size})")
    for task in sources:
        path, _ = contribute_task(cloud, task, home / "tasks", backbone, plan)
        measure_knowledge(cloud, task, path, space, plan, storage)
        console.print(f"source {task.name}: its study measured ({time.perf_counter() - started:.0f} s)")
    built = time.perf_counter() - started

    curves: dict[str, list[list[float]]] = {mode: [] for mode in modes}
    for family in plan.families[:args.targets]:
        target = replace(held_out_task(family, plan), num_images=args.target_images, **harder)
        path, fingerprint = contribute_task(cloud, target, home / "tasks", backbone, plan, contribute=False)
        rec = recommend(cloud, fingerprint, name=target.name, top_k=args.top_k, log=False)
        # The misleading case: the farthest source tasks first, nothing enqueued.
        ours = {t.name for t in sources}
        farthest = [r for r in reversed(rec.ranking) if r.source in ours] or list(reversed(rec.ranking))
        misleading = replace(rec, ranking=[replace(r, rank=i) for i, r in enumerate(farthest, start=1)],
                             scenarios={})
        base = TrainConfig(target=str(path), name=target.name, image_size=plan.image_size, batch_size=16,
                           val_fraction=args.held_out)
        for seed in range(args.seeds):
            cold_trials: list[dict] = []
            for mode in modes:
                study = StudyPlan(f"{mode}-{target.name}-{seed}", storage, n_trials=args.trials, top_k=args.top_k,
                                  seed=seed, contribute=False, widen=True,   # the space holds what is suggested
                                  transfer="top-k" if mode in ("cold", "top-k") else "studies")
                given = {"cold": None, "misled": misleading}.get(mode, rec)
                if mode == "adversarial":
                    given = adversary(cloud, rec, f"adversary-{target.name}-{seed}", cold_trials)
                result = run_study(replace(base, seed=seed), cloud, space, study,
                                   recommendation=None if given is None else Recommendation.read(given.to_json()))
                if mode == "cold":
                    cold_trials = result.trials
                values = [t["value"] if t["state"] == "COMPLETE" else 0.0 for t in result.trials][:args.trials]
                curves[mode].append(list(np.maximum.accumulate(values)))
                console.print(f"{target.name} seed {seed} {mode}: best {curves[mode][-1][-1]:.3f} "
                              f"({time.perf_counter() - started:.0f} s)")

    report(curves, args.trials)
    print(f"\n{len(curves['cold'])} (task, seed) pairs, {args.target_images} images per target "
          f"({args.held_out:.0%} held out), {args.classes or '2-4'} classes, space {', '.join(space.searched)} "
          f"(epochs {list(space.epochs)}, sides {list(space.image_size)}); cloud built in {built / 60:.1f} min, total "
          f"{(time.perf_counter() - started) / 60:.1f} min on this machine")
    if args.json:
        Path(args.json).write_text(json.dumps({"curves": curves, "args": vars(args)}, indent=1, default=str))


def adversary(cloud, rec, name: str, cold_trials: list[dict]):
    """A recommendation whose one source is a study built to mislead: the cold study's finished trials with their
    scores reversed (kept in the cloud as task ``name``'s study, as a real source study is); nothing enqueued."""
    from tfp_mlflow.cloud.schema import TUNING_EXPERIMENT, Artifact, Kind, Tag

    if not cloud.find_runs(Kind.STUDY, experiment=TUNING_EXPERIMENT, task=name):
        reversed_trials = [{**t, "value": 1.0 - t["value"]} for t in cold_trials
                           if t["state"] == "COMPLETE" and t["value"] is not None]
        run = cloud.start_run(Kind.STUDY, {Tag.TASK: name, Tag.STUDY: name}, experiment=TUNING_EXPERIMENT)
        record = {"schema": "tfp.study/1", "study_name": name, "trials": reversed_trials}
        run.log_file(Artifact.STUDY, lambda p: p.write_text(json.dumps(record, default=str)))
        run.finish()
    return replace(rec, ranking=[replace(rec.ranking[0], source=name, rank=1)], scenarios={})


def _numbers(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def trials_to_reach(curve: list[float], level: float) -> int:
    """1-based trial at which the best-so-far first reaches ``level`` (len + 1 when it never does)."""
    return next((i + 1 for i, value in enumerate(curve) if value >= level - 1e-12), len(curve) + 1)


def interval(values, rng: np.random.Generator, draws: int = 2000) -> tuple[float, float, float]:
    """Mean and a 95 % bootstrap interval."""
    values = np.asarray(values, dtype=float)
    means = rng.choice(values, size=(draws, len(values))).mean(axis=1)
    return float(values.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def report(curves: dict[str, list[list[float]]], budget: int) -> None:
    rng = np.random.default_rng(0)
    checkpoints = sorted({n for n in (1, 3, 5) if n < budget} | {budget})
    cold = np.array(curves["cold"])
    head = ["study", *[f"best after {n}" for n in checkpoints], "trials to cold's best", "trials to 95 % of it"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for mode, rows in curves.items():
        array = np.array(rows)
        cells = [mode]
        for n in checkpoints:
            mean, low, high = interval(array[:, n - 1], rng)
            cells.append(f"{mean:.3f} [{low:.3f}, {high:.3f}]")
        for share in (1.0, 0.95):
            reach = [trials_to_reach(row, share * c[-1]) for row, c in zip(array, cold)]
            mean, low, high = interval(reach, rng)
            cells.append(f"{mean:.2f} [{low:.2f}, {high:.2f}]")
        print("| " + " | ".join(cells) + " |")
    print(f"(trials to reach: {budget + 1} when never reached within the budget)")


if __name__ == "__main__":
    main()
