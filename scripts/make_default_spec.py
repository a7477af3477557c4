"""Make the shipped default spec and the bundled example fingerprints (run once; the files are committed).

    python scripts/make_default_spec.py [--samples 200] [--examples-samples 300]

The spec's edges are the 5 % / 95 % quantiles of tf_efficientnet_lite0 features over two synthetic demo tasks per
family (`tfp_mlflow.demo.tasks.demo_suite`); the examples are one further task per family, fingerprinted with it.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tfp_mlflow.demo.tasks import demo_suite
from tfp_mlflow.extract import Draws, create_spec, fingerprint_dataset

DATA = Path(__file__).resolve().parents[1] / "tfp_mlflow" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="draws per reference task")
    parser.add_argument("--examples-samples", type=int, default=300, help="draws per example fingerprint")
    args = parser.parse_args()
    suite = demo_suite(3, seed=2024)
    reference = [t for t in suite if not t.name.endswith("_2")]
    examples = [t for t in suite if t.name.endswith("_2")]
    with tempfile.TemporaryDirectory() as tmp:
        folders = {t.name: t.write(Path(tmp) / t.name) for t in suite}
        spec = create_spec([folders[t.name] for t in reference], draws_per_dataset=args.samples, seed=0,
                           provenance={"reference": [f"demo:{t.name}" for t in reference],
                                       "script": "scripts/make_default_spec.py", "suite_seed": 2024})
        spec.save(DATA / "default-spec.npz")
        print(f"default spec {spec.id} ({spec.num_features} features) -> {DATA / 'default-spec.npz'}")
        for task in examples:
            fingerprint = fingerprint_dataset(folders[task.name], spec=spec, name=task.name, keywords=task.keywords,
                                              draws=Draws(samples=args.examples_samples, seed=0))
            path = fingerprint.save(DATA / "examples" / f"{task.name}.npz")
            print(f"example {task.name} -> {path} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
