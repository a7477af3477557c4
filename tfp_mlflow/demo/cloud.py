"""A knowledge cloud of synthetic demo tasks whose knowledge is measured, not invented.

Each source task is drawn, fingerprinted with the shipped spec, contributed as shareable data, and then gets its
knowledge from a short ``tfp tune`` study of its own (architectures with offline weights, a few published
policies, learning rate and weight decay): the study contributes its best architecture result and its winning
policy, exactly as a user's study would. ``tfp demo`` and ``benchmarks/warmstart.py`` both build on this.
"""
from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tfp_mlflow.cloud.base import KnowledgeStore
from tfp_mlflow.demo.tasks import FAMILIES, FAMILY_KEYWORDS, DemoTask, demo_suite
from tfp_mlflow.errors import BadInputError

__all__ = ["DemoPlan", "QUICK_PLAN", "DEFAULT_PLAN", "demo_space", "source_tasks", "held_out_task",
           "contribute_task", "measure_knowledge", "final_manifest"]


@dataclass(frozen=True)
class DemoPlan:
    """How big the demo is: tasks, fingerprint draws, and the trial budgets (sized to a 2-core CPU)."""

    families: tuple[str, ...] = FAMILIES
    sources_per_family: int = 2
    num_images: int = 90
    image_size: int = 48
    samples: int = 300
    knowledge_trials: int = 3
    epochs: int = 4
    tune_trials: int = 5
    final_epochs: int = 6
    #: Images of the held-out task's test split: fresh draws of the same task that no study saw.
    test_images: int = 240
    #: Training seeds of each final configuration (mean and spread over them).
    final_seeds: int = 3
    policies: int = 4
    #: Measured on a 2-core CPU (the README's run; --quick: about 3 minutes).
    expected_minutes: float = 14


DEFAULT_PLAN = DemoPlan()
QUICK_PLAN = DemoPlan(families=("radiograph", "fundus", "histology"), sources_per_family=1, num_images=60,
                      samples=100, knowledge_trials=2, epochs=3, tune_trials=2, final_epochs=3, test_images=60,
                      final_seeds=1, policies=2, expected_minutes=3)


def demo_space(cloud: KnowledgeStore, plan: DemoPlan, seed: int = 0):
    """The space every demo study searches: offline EfficientNet-Lites, ``plan.policies`` published policies."""
    from tfp_mlflow.tune import NO_POLICY, SearchSpace, loadable_architectures
    from tfp_mlflow.tune.study import cloud_policies

    architectures, _ = loadable_architectures([f"tf_efficientnet_lite{level}" for level in range(3)])
    published = sorted(p for p in cloud_policies(cloud) if "-rep" in p)
    if len(published) < plan.policies:
        raise BadInputError(f"the cloud at {cloud.uri} holds {len(published)} published policies, the demo needs "
                            f"{plan.policies}; run `tfp import-reference` first")
    chosen = np.random.default_rng([seed, 11]).choice(len(published), plan.policies, replace=False)
    return SearchSpace(architectures=tuple(architectures),
                       policies=(NO_POLICY, *sorted(published[i] for i in chosen)),
                       lr=(3e-4, 3e-2), weight_decay=(1e-6, 1e-3), epochs=(plan.epochs,))


def source_tasks(plan: DemoPlan, seed: int = 0) -> list[DemoTask]:
    """The tasks that make up the cloud (``<family>_<i>``)."""
    return demo_suite(plan.sources_per_family, families=plan.families, num_images=plan.num_images,
                      image_size=plan.image_size, seed=seed)


def held_out_task(family: str, plan: DemoPlan, seed: int = 0, index: int = 0) -> DemoTask:
    """A new task of ``family`` that the cloud has never seen (``<family>_new``, ``<family>_new1``, ...)."""
    rng = np.random.default_rng([seed, 23, FAMILIES.index(family), index])
    return DemoTask(name=f"{family}_new{index or ''}", family=family, num_classes=int(rng.integers(2, 5)),
                    num_images=plan.num_images, image_size=plan.image_size, texture=float(rng.uniform(0.7, 1.5)),
                    colour_shift=float(rng.uniform(-0.4, 0.4)), seed=int(rng.integers(1 << 30)))


def final_manifest(task: DemoTask, data: Path, plan: DemoPlan, folder: Path) -> Path:
    """A manifest of the user's data (``train``) and ``plan.test_images`` fresh images of the same task (``test``),
    drawn with another seed: the final comparison's held-out split, which no study has seen."""
    test = replace(task, name=f"{task.name}-test", num_images=plan.test_images, seed=task.seed + 1)
    test_folder = test.write(folder / test.name)
    manifest = folder / f"{task.name}-final.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        for split, root in (("train", data), ("test", test_folder)):
            for image in sorted(root.glob("class_*/*.png")):
                writer.writerow([image.relative_to(folder).as_posix(), image.parent.name, split])
    return manifest


def contribute_task(cloud: KnowledgeStore, task: DemoTask, folder: Path, backbone, plan: DemoPlan, seed: int = 0,
                    contribute: bool = True):
    """Draw ``task`` under ``folder``, fingerprint it with the shipped spec and (optionally) add it as shareable."""
    from tfp_mlflow.extract import Draws, fingerprint_dataset

    path = task.write(folder / task.name)  # deterministic: a second demo run rewrites the same images
    fingerprint = fingerprint_dataset(path, backbone=backbone, name=task.name, keywords=FAMILY_KEYWORDS[task.family],
                                      progress=False, draws=Draws(samples=plan.samples, seed=seed, workers=0))
    if contribute:
        cloud.contribute(fingerprint, name=task.name, domain=task.family, data_uri=str(path.resolve()),
                         shareable=True, num_images=task.num_images, num_classes=task.num_classes)
    return path, fingerprint


def measure_knowledge(cloud: KnowledgeStore, task: DemoTask, path: Path, space, plan: DemoPlan, storage: str,
                      seed: int = 0, on_trial: Callable | None = None):
    """A cold study of ``plan.knowledge_trials`` trials on the task; its best result goes to the cloud."""
    from tfp_mlflow.train import TrainConfig
    from tfp_mlflow.tune import StudyPlan, run_study

    base = TrainConfig(target=str(path), name=task.name, image_size=plan.image_size, batch_size=16, seed=seed)
    # Each task's sampler has its own seed, so that the sources explore different configurations.
    sampler_seed = int(np.random.default_rng([seed, task.seed]).integers(1 << 31))
    study = StudyPlan(f"knowledge-{task.name}-{seed}", storage, n_trials=plan.knowledge_trials, seed=sampler_seed)
    return run_study(base, cloud, space, study, on_trial=on_trial)
