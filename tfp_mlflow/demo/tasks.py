"""Synthetic image-classification tasks in families that imitate imaging domains (numpy only, deterministic).

No public medical dataset can be downloaded here, so tests, the default spec and the demo draw their own. Each
family has a look (colours, texture, anatomy-like structures) and a class structure (what the label changes);
knobs vary texture, colour, number of classes, size and imbalance. ``DemoTask(...).image(i)`` is a pure function
of the task's fields and ``i``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

__all__ = ["DemoTask", "FAMILIES", "FAMILY_KEYWORDS", "demo_suite"]

FAMILY_KEYWORDS: dict[str, tuple[str, ...]] = {
    "radiograph": ("x-ray", "chest", "medical", "greyscale"),
    "dermoscopy": ("dermoscopy", "skin", "medical", "lesion"),
    "endoscopy": ("endoscopy", "gastrointestinal", "medical", "polyp"),
    "fundus": ("fundus_photography", "eye", "medical", "retina"),
    "histology": ("histology", "tissue_pathology", "medical", "microscopy"),
    "natural": ("natural_objects", "shapes"),
}
FAMILIES = tuple(FAMILY_KEYWORDS)


@dataclass(frozen=True)
class DemoTask:
    """One synthetic task.

    Parameters
    ----------
    name : str
    family : str
        One of :data:`FAMILIES`.
    num_classes : int
        2 to 5; the label changes a family-specific structure (nodules, lesion darkness, polyps, exudates,
        nuclei density, object shape).
    num_images : int
    image_size : int
        Side in pixels.
    imbalance : float
        Ratio of the largest to the smallest class (1 = balanced).
    texture : float
        Scale of the background texture (larger = coarser).
    colour_shift : float
        Shift of the family's colours, -1 .. 1.
    seed : int
    """

    name: str
    family: str
    num_classes: int = 2
    num_images: int = 60
    image_size: int = 128
    imbalance: float = 1.0
    texture: float = 1.0
    colour_shift: float = 0.0
    seed: int = 0
    keywords: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.family not in FAMILY_KEYWORDS:
            raise ValueError(f"unknown family {self.family!r}; choose one of {', '.join(FAMILIES)}")
        if not 2 <= self.num_classes <= 5 or self.num_images < self.num_classes or self.image_size < 32:
            raise ValueError("need 2-5 classes, at least one image per class and images of at least 32 px")
        if not self.keywords:
            object.__setattr__(self, "keywords", FAMILY_KEYWORDS[self.family])

    @property
    def labels(self) -> np.ndarray:
        """Class index of every image, shape (num_images,); class k has weight ``imbalance ** (-k / (C-1))``."""
        weights = self.imbalance ** (-np.arange(self.num_classes) / max(1, self.num_classes - 1))
        counts = np.maximum(1, np.round(weights / weights.sum() * self.num_images)).astype(int)
        counts[0] += self.num_images - counts.sum()
        labels = np.repeat(np.arange(self.num_classes), counts)
        return np.random.default_rng([self.seed, 7]).permutation(labels)

    def image(self, index: int) -> np.ndarray:
        """Image ``index`` as RGB uint8 of shape (image_size, image_size, 3)."""
        rng = np.random.default_rng([self.seed, index, FAMILIES.index(self.family)])
        label = int(self.labels[index])
        draw = _DRAWERS[self.family]
        image = draw(rng, self.image_size, label, self.num_classes, self.texture, self.colour_shift)
        return np.clip(image * 255.0, 0, 255).astype(np.uint8)

    def write(self, folder: str | os.PathLike) -> Path:
        """Write the task as a folder of class folders of PNGs (``class_k/img_####.png``); returns the folder."""
        from PIL import Image

        folder = Path(folder)
        for index, label in enumerate(self.labels):
            target = folder / f"class_{label}" / f"img_{index:04d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(self.image(index)).save(target)
        return folder


def demo_suite(tasks_per_family: int = 3, *, families: tuple[str, ...] = FAMILIES, num_images: int = 60,
               image_size: int = 128, seed: int = 0) -> list[DemoTask]:
    """Tasks across families with varied knobs; deterministic given ``seed``."""
    rng = np.random.default_rng(seed)
    tasks = []
    for family in families:
        for member in range(tasks_per_family):
            tasks.append(DemoTask(name=f"{family}_{member}", family=family,
                                  num_classes=int(rng.integers(2, 5)), num_images=num_images,
                                  image_size=image_size, imbalance=float(rng.choice([1.0, 1.5, 3.0])),
                                  texture=float(rng.uniform(0.7, 1.5)), colour_shift=float(rng.uniform(-0.4, 0.4)),
                                  seed=int(rng.integers(1 << 30))))
    return tasks


# -- drawing primitives (float images in [0, 1]) -----------------------------------------------------------------
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    axis = (np.arange(size) + 0.5) / size
    return np.meshgrid(axis, axis, indexing="ij")


def _noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Smooth value noise in [0, 1] with features about ``scale`` * size / 8 pixels wide."""
    cells = max(2, int(round(8 / max(scale, 0.1))))
    coarse = rng.random((cells + 1, cells + 1))
    smooth = ndimage.zoom(coarse, size / (cells + 1), order=3, mode="nearest")[:size, :size]
    smooth += 0.25 * rng.random((size, size))
    smooth -= smooth.min()
    return smooth / max(smooth.max(), 1e-9)


def _blobs(size: int, centres: np.ndarray, radii: np.ndarray, softness: float = 0.3) -> np.ndarray:
    """Sum of soft discs, shape (size, size), each in [0, 1]."""
    if len(centres) == 0:
        return np.zeros((size, size))
    y, x = _grid(size)
    d = np.sqrt((y[None] - centres[:, 0, None, None]) ** 2 + (x[None] - centres[:, 1, None, None]) ** 2)
    r = radii[:, None, None]
    return np.clip((r - d) / (softness * r) + 0.5, 0, 1).max(axis=0)


def _tint(gray: np.ndarray, colour: np.ndarray) -> np.ndarray:
    return gray[..., None] * colour[None, None, :]


def _colour(base: tuple[float, float, float], shift: float) -> np.ndarray:
    rotated = np.array(base) + shift * 0.15 * np.array([1.0, -0.5, -0.5])
    return np.clip(rotated, 0, 1)


def _radiograph(rng, size, label, classes, texture, shift):
    y, x = _grid(size)
    body = np.clip(1.2 - ((y - 0.55) / 0.45) ** 2 - ((x - 0.5) / 0.4) ** 2, 0, 1)
    ribs = 0.5 + 0.5 * np.sin((y * 14 + 2 * np.abs(x - 0.5)) * np.pi + rng.uniform(0, np.pi))
    lungs = _blobs(size, np.array([[0.5, 0.32], [0.5, 0.68]]), np.array([0.22, 0.22]), 0.8)
    gray = 0.15 + 0.45 * body * (0.7 + 0.3 * ribs) - 0.2 * lungs * body + 0.12 * _noise(rng, size, texture)
    nodules = rng.uniform([0.3, 0.2], [0.75, 0.8], size=(label * 2, 2))
    gray += 0.45 * _blobs(size, nodules, rng.uniform(0.04, 0.07, len(nodules)))
    return np.repeat(np.clip(gray + 0.1 * shift, 0, 1)[..., None], 3, axis=2)


def _dermoscopy(rng, size, label, classes, texture, shift):
    y, x = _grid(size)
    skin = _tint(0.85 + 0.15 * _noise(rng, size, texture), _colour((0.92, 0.72, 0.6), shift))
    angle = np.arctan2(y - 0.5, x - 0.5)
    irregular = 1 + (0.08 + 0.1 * label / classes) * np.sin(3 * angle + rng.uniform(0, 6)) * np.cos(
        5 * angle + rng.uniform(0, 6))
    radius = rng.uniform(0.2, 0.3) * irregular
    lesion = np.clip((radius - np.hypot(y - 0.5, x - 0.5)) / 0.03, 0, 1)
    darkness = 0.35 + 0.45 * label / max(1, classes - 1)
    pigment = _colour((0.55, 0.33, 0.2), shift) * (1 - darkness) + 0.05
    spots = _noise(rng, size, texture * 0.5)[..., None]
    return skin * (1 - lesion[..., None]) + lesion[..., None] * pigment * (0.7 + 0.3 * spots)


def _endoscopy(rng, size, label, classes, texture, shift):
    y, x = _grid(size)
    folds = 0.5 + 0.5 * np.sin(10 * np.hypot(y - 0.5, x - 0.5) * np.pi + 3 * _noise(rng, size, texture))
    mucosa = _tint(0.55 + 0.35 * folds, _colour((0.85, 0.35, 0.35), shift))
    vignette = np.clip(1.3 - 1.6 * np.hypot(y - 0.5, x - 0.5), 0, 1)[..., None]
    polyps = rng.uniform(0.25, 0.75, size=(label, 2))
    bump = _blobs(size, polyps, rng.uniform(0.07, 0.12, len(polyps)), 0.9)[..., None]
    image = mucosa * (1 - 0.5 * bump) + bump * _colour((0.95, 0.55, 0.45), shift)
    glints = _blobs(size, rng.uniform(0.1, 0.9, size=(6, 2)), rng.uniform(0.01, 0.025, 6), 0.2)[..., None]
    return (image * vignette) * (1 - glints) + glints


def _fundus(rng, size, label, classes, texture, shift):
    y, x = _grid(size)
    radius = np.hypot(y - 0.5, x - 0.5)
    disc = np.clip((0.47 - radius) / 0.02, 0, 1)[..., None]
    retina = _tint(0.6 + 0.4 * (1 - radius / 0.5) * (0.8 + 0.2 * _noise(rng, size, texture)),
                   _colour((0.85, 0.4, 0.12), shift))
    optic = _blobs(size, np.array([[0.5, rng.uniform(0.25, 0.35)]]), np.array([0.07]), 0.6)[..., None]
    vessels = np.zeros((size, size))
    for _ in range(5):
        walk = np.cumsum(rng.normal(0, 0.006, size=(240, 2)), axis=0) + [0.5, 0.3]
        walk += np.linspace(0, 1, 240)[:, None] * rng.uniform(-0.5, 0.5, 2)
        ij = np.clip((walk * size).astype(int), 0, size - 1)
        vessels[ij[:, 0], ij[:, 1]] = 1
    vessels = np.clip(ndimage.gaussian_filter(vessels, size / 200) * 4, 0, 1)[..., None]
    exudates = _blobs(size, rng.uniform(0.25, 0.75, size=(3 * label, 2)), rng.uniform(0.012, 0.025, 3 * label),
                      0.3)[..., None]
    image = retina * (1 - 0.6 * vessels) + optic * _colour((1.0, 0.9, 0.6), shift)
    image = image * (1 - exudates) + exudates * np.array([1.0, 0.95, 0.5])
    return image * disc


def _histology(rng, size, label, classes, texture, shift):
    stroma = _tint(0.8 + 0.2 * _noise(rng, size, texture), _colour((0.95, 0.7, 0.85), shift))
    count = int(12 + 18 * label / max(1, classes - 1) * 2)
    nuclei = _blobs(size, rng.random((count, 2)), rng.uniform(0.02, 0.035 + 0.01 * label, count), 0.4)[..., None]
    stain = _colour((0.4, 0.2, 0.6), shift) * (0.8 + 0.2 * _noise(rng, size, texture * 0.4))[..., None]
    return stroma * (1 - nuclei) + nuclei * stain


def _natural(rng, size, label, classes, texture, shift):
    y, x = _grid(size)
    sky = np.stack([0.4 + 0.3 * y, 0.6 + 0.2 * y, 0.9 - 0.3 * y], axis=-1) * (0.85 + 0.15 * _noise(
        rng, size, texture))[..., None]
    cy, cx = rng.uniform(0.35, 0.65, 2)
    r = rng.uniform(0.15, 0.25)
    dy, dx = y - cy, x - cx
    shapes = [np.hypot(dy, dx) < r, np.maximum(np.abs(dy), np.abs(dx)) < r * 0.85,
              (dy > -r) & (np.abs(dx) < (dy + r) * 0.6) & (dy < r * 0.8),
              (np.abs(dy) < r * 0.3) | (np.abs(dx) < r * 0.3) & (np.hypot(dy, dx) < r * 1.1),
              np.abs(np.hypot(dy, dx) - r * 0.75) < r * 0.2]
    mask = (shapes[label] & (np.hypot(dy, dx) < r * 1.2)).astype(float)[..., None]
    colour = np.clip(rng.random(3) + shift * 0.2, 0, 1)
    return sky * (1 - mask) + mask * colour


_DRAWERS = {"radiograph": _radiograph, "dermoscopy": _dermoscopy, "endoscopy": _endoscopy, "fundus": _fundus,
            "histology": _histology, "natural": _natural}
