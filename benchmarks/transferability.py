"""Do transferability scores predict which architecture fine-tunes best? Measured on synthetic demo tasks.

For each new demo task, every candidate (the offline EfficientNet-Lite0/1/2) is fine-tuned briefly with `tfp train`
and scored with every transferability score on the task's labelled images. Printed: Kendall's tau and weighted tau
between each score and the fine-tuned balanced accuracy, per task and on average (the seed paper's protocol), and
the same for the cloud's fingerprint-based suggestion (candidates in the order the recommender names them) when a
cloud with architecture knowledge is given (e.g. the one `tfp demo` leaves).

    .venv/bin/python benchmarks/transferability.py --cloud sqlite:///tfp-demo/mlflow.db     # about 10 minutes
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="radiograph,fundus,histology,dermoscopy,endoscopy,natural")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2, help="Fine-tuning seeds averaged per candidate.")
    parser.add_argument("--cloud", default=None, help="A cloud with architecture knowledge (tracking URI).")
    args = parser.parse_args()

    from tfp_mlflow.cloud.store import Cloud
    from tfp_mlflow.demo.cloud import DEFAULT_PLAN, held_out_task
    from tfp_mlflow.extract import Draws, fingerprint_dataset
    from tfp_mlflow.extract.probe import probe_model
    from tfp_mlflow.recommend import recommend
    from tfp_mlflow.train import TrainConfig, train
    from tfp_mlflow.transferability import SCORES, score

    started = time.perf_counter()
    candidates = [f"tf_efficientnet_lite{i}" for i in range(3)]
    home = Path(tempfile.mkdtemp(prefix="tfp-transferability-"))
    scratch = Cloud(f"sqlite:///{home / 'mlflow.db'}")
    cloud = Cloud(args.cloud) if args.cloud else None
    signals = [*SCORES, *(["cloud suggestion"] if cloud else [])]
    taus: dict[str, list[float]] = {s: [] for s in signals}
    weighted: dict[str, list[float]] = {s: [] for s in signals}
    tasks = [held_out_task(f, DEFAULT_PLAN, seed=0, index=2) for f in args.families.split(",")]
    for task in tasks:
        path = task.write(home / task.name)
        accuracy = {}
        for name in candidates:
            runs = [train(TrainConfig(target=str(path), scenario="architecture", architecture=name,
                                      epochs=args.epochs, image_size=DEFAULT_PLAN.image_size, batch_size=16,
                                      seed=seed), cloud=scratch, progress=False, log_model=False).balanced_accuracy
                    for seed in range(args.seeds)]
            accuracy[name] = float(np.mean(runs))
        values = {s: {} for s in signals}
        for name in candidates:
            probe = probe_model(path, name, samples=None)
            for s in SCORES:
                values[s][name] = score(s, probe.labels, features=probe.features, probabilities=probe.probabilities)
        if cloud is not None:
            fingerprint = fingerprint_dataset(path, name=task.name, progress=False,
                                              draws=Draws(samples=DEFAULT_PLAN.samples, workers=0))
            items = recommend(cloud, fingerprint, name=task.name, top_k=5, scenarios=("architecture",),
                              log=False).suggestions("architecture")
            named = list(dict.fromkeys(i.architecture for i in items))
            values["cloud suggestion"] = {c: -(named.index(c) if c in named else len(named)) for c in candidates}
        bas = [accuracy[c] for c in candidates]
        line = [f"{task.name}: BA " + ", ".join(f"{c.removeprefix('tf_efficientnet_')} {accuracy[c]:.3f}"
                                                 for c in candidates)]
        for s in signals:
            xs = [values[s][c] for c in candidates]
            taus[s].append(scipy.stats.kendalltau(xs, bas)[0])
            weighted[s].append(scipy.stats.weightedtau(xs, bas)[0])
        print(*line, f"({time.perf_counter() - started:.0f} s)", flush=True)

    print(f"\nKendall tau between signal and fine-tuned balanced accuracy over {len(candidates)} candidates "
          f"({args.epochs} epochs, mean of {args.seeds} seeds); nan: ties in accuracy or in the signal")
    width = max(len(t.name) for t in tasks) + 2
    header = f"{'signal':<18}" + "".join(f"{t.name:>{width}}" for t in tasks) + f"{'mean tau':>10}{'mean wtau':>11}"
    print(header)
    for s in signals:
        print(f"{s:<18}" + "".join(f"{v:>{width}.2f}" for v in taus[s])
              + f"{np.nanmean(taus[s]):>10.2f}{np.nanmean(weighted[s]):>11.2f}")
    print(f"\n{len(tasks)} tasks, {(time.perf_counter() - started) / 60:.1f} min on this machine")


if __name__ == "__main__":
    main()
