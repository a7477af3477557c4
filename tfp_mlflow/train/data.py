"""Training data: a held-out split, the paper's shrinking of large targets, albumentations pipelines, a mix of tasks.

The split is the manifest's (``train`` and ``val``/``test`` rows) when it has one, else stratified 80:20 from the
seed. ``shrink`` subsamples the training split (stratified) as the paper did for targets over 1,000 samples.
"""
from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
import torch

from tfp_mlflow.errors import BadInputError
from tfp_mlflow.extract.datasets import ImageDataset, load_image, open_dataset

__all__ = ["TaskSplit", "split_task", "build_transforms", "ImageClassificationData", "mixed_sampler"]

#: Manifest split names used as the held-out split, in order of preference.
HELD_OUT_SPLITS = ("val", "validation", "test")


@dataclass(frozen=True)
class TaskSplit:
    """A task's training and held-out images; ``classes`` fixes the label order of both."""

    name: str
    classes: tuple[str, ...]
    train: ImageDataset
    val: ImageDataset

    def label_indices(self, dataset: ImageDataset) -> np.ndarray:
        """Class index of every image of ``dataset``, shape (len(dataset),)."""
        index = {label: k for k, label in enumerate(self.classes)}
        return np.array([index[label] for label in dataset.labels], dtype=np.int64)


def split_task(source: str | os.PathLike, *, seed: int = 0, val_fraction: float = 0.2,
               shrink: int | None = None, name: str | None = None, skip_unreadable: bool = False) -> TaskSplit:
    """Open a dataset and split it into training and held-out images (see the module docstring).

    Raises :class:`~tfp_mlflow.errors.BadInputError` before any training for a single class, a class too small
    to hold out, or a held-out split that misses a training class. With ``skip_unreadable`` every image is
    decoded once first and those that cannot be are left out (a warning names how many and the first).
    """
    if not 0.0 < val_fraction < 1.0:
        raise BadInputError(f"the held-out fraction must lie in (0, 1), got {val_fraction}")
    if shrink is not None and shrink < 2:
        raise BadInputError(f"--shrink must be at least 2 samples, got {shrink}")
    from tfp_mlflow.extract.sources import resolve_source

    source = resolve_source(source)     # a library's dataset: its manifest, whose split column holds out val/test
    every = open_dataset(source, split=None)
    train = open_dataset(source, split="train")
    held_out = None
    if train.root.suffix.lower() == ".csv" and len(train) < len(every):
        for split in HELD_OUT_SPLITS:
            candidate = open_dataset(source, split=split, min_classes=1) if _has_split(source, split) else None
            if candidate is not None and len(candidate):
                held_out = candidate
                break
    if held_out is None:
        train, held_out = _stratified_split(every, val_fraction, seed)
    missing = sorted(set(train.classes) - set(held_out.classes))
    if missing:
        raise BadInputError(f"the held-out split of {str(every.root)!r} has no image of class {missing[0]!r}; "
                            f"give every class at least one held-out image")
    if shrink is not None and len(train) > shrink:
        train = _stratified_subset(train, shrink, seed)
    if skip_unreadable:
        train, held_out = _readable(train), _readable(held_out)
    return TaskSplit(name=name or every.name, classes=tuple(train.classes), train=train, val=held_out)


def _readable(dataset: ImageDataset) -> ImageDataset:
    """``dataset`` without the images that cannot be decoded (each is tried once, on a few threads)."""
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    def readable(path: str) -> bool:
        try:
            load_image(path, min_side=32)
            return True
        except BadInputError:
            return False

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2)) as pool:
        keep = list(pool.map(readable, dataset.paths))
    if all(keep):
        return dataset
    bad = [p for p, ok in zip(dataset.paths, keep) if not ok]
    warnings.warn(f"left out {len(bad)} unreadable images of {dataset.name} (--skip-unreadable; first: {bad[0]})",
                  stacklevel=2)
    return replace(dataset, paths=tuple(p for p, ok in zip(dataset.paths, keep) if ok),
                   labels=tuple(label for label, ok in zip(dataset.labels, keep) if ok))


def _has_split(source: str | os.PathLike, split: str) -> bool:

    try:
        with open(source, newline="", encoding="utf-8-sig") as handle:
            return any((row.get("split") or "").strip() == split for row in csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error):
        return False   # reading the manifest itself then says what is wrong


def _stratified_split(dataset: ImageDataset, fraction: float, seed: int) -> tuple[ImageDataset, ImageDataset]:
    counts = Counter(dataset.labels)
    small = [label for label, count in sorted(counts.items()) if count < 2]
    if small:
        raise BadInputError(f"class {small[0]!r} of {str(dataset.root)!r} has {counts[small[0]]} image; a held-out "
                            f"split needs at least 2 per class (add images or give a manifest with a val split)")
    rng = np.random.default_rng([seed, 80_20])
    held_out: list[int] = []
    labels = np.array(dataset.labels)
    for label in sorted(counts):
        members = np.flatnonzero(labels == label)
        take = min(len(members) - 1, max(1, int(round(fraction * len(members)))))
        held_out.extend(rng.choice(members, take, replace=False).tolist())
    held = set(held_out)
    return dataset.without(held), dataset.without(set(range(len(dataset))) - held)


def _stratified_subset(dataset: ImageDataset, size: int, seed: int) -> ImageDataset:
    labels = np.array(dataset.labels)
    classes = sorted(set(dataset.labels))
    if size < len(classes):
        raise BadInputError(f"--shrink {size} is smaller than the number of classes ({len(classes)})")
    rng = np.random.default_rng([seed, 800])
    quota = {c: max(1, int(np.floor(size * np.mean(labels == c)))) for c in classes}
    # Hand out what flooring left over to the largest classes first, deterministically.
    for c in sorted(classes, key=lambda c: -np.mean(labels == c))[:max(0, size - sum(quota.values()))]:
        quota[c] += 1
    keep = set()
    for c in classes:
        members = np.flatnonzero(labels == c)
        keep.update(rng.choice(members, min(quota[c], len(members)), replace=False).tolist())
    return dataset.without(set(range(len(dataset))) - keep)


def build_transforms(image_size: int, mean: Sequence[float], std: Sequence[float], *,
                     policy: dict[str, Any] | None = None, train: bool = True, seed: int | None = None):
    """Albumentations pipeline: resize, [the policy], horizontal flip, the backbone's normalisation, to tensor.

    Evaluation pipelines only resize and normalise. Policies are translated to albumentations 2.x on load;
    ``seed`` makes the random choices repeatable.
    """
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    steps: list = [A.Resize(image_size, image_size)]
    if train:
        if policy is not None:
            from tfp_mlflow.policies import load_policy

            steps.append(load_policy(policy, image_side=image_size))
        steps.append(A.HorizontalFlip(p=0.5))
    steps += [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]
    return A.Compose(steps, seed=seed)


class ImageClassificationData(torch.utils.data.Dataset):
    """``(image (3, s, s) float32, label, task)`` for every image of a dataset; ``task`` numbers the head."""

    def __init__(self, dataset: ImageDataset, labels: np.ndarray, transform, *, task: int = 0,
                 image_size: int = 224) -> None:
        self.paths = dataset.paths
        self.labels = labels
        self.transform = transform
        self.task = task
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image = load_image(self.paths[index], min_side=self.image_size)
        return self.transform(image=image)["image"], int(self.labels[index]), self.task


def mixed_sampler(sizes: Sequence[int], draws: int, seed: int) -> torch.utils.data.WeightedRandomSampler:
    """Sampler over a ConcatDataset of tasks that draws each task with equal probability (co-training)."""
    weights = torch.cat([torch.full((size,), 1.0 / (len(sizes) * size), dtype=torch.float64) for size in sizes])
    generator = torch.Generator().manual_seed(seed)
    # torch takes the tensor as it is (its annotation says a sequence of floats)
    return torch.utils.data.WeightedRandomSampler(cast(Sequence[float], weights), draws, replacement=True,
                                                  generator=generator)
