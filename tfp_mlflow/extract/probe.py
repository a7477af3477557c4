"""What a candidate model sees of a labelled target: penultimate features and ImageNet-head probabilities.

The inputs of the transferability scores (:mod:`tfp_mlflow.transferability`). Images are resized to the model's
input side and normalised with its own config (no random augmentation: a score should not depend on the draw);
``samples`` keeps a seeded, stratified subset. Weights load through the one path extraction and training use.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tfp_mlflow.errors import BadInputError, TfpError
from tfp_mlflow.extract.backbones import create_model, normalisation
from tfp_mlflow.extract.datasets import load_image, open_dataset

__all__ = ["Probe", "probe_model", "transferability_reranker"]


@dataclass
class Probe:
    """Features (n, d), ImageNet probabilities (n, 1000) or ``None`` when the source head was not loaded, labels."""

    architecture: str
    features: np.ndarray
    probabilities: np.ndarray | None
    labels: np.ndarray
    classes: list[str]
    weights_source: str


def probe_model(data: str | os.PathLike, architecture: str, *, weights: str | os.PathLike | None = None,
                samples: int | None = 500, batch_size: int = 32, device: str | None = None, seed: int = 0,
                on_batch=None) -> Probe:
    """Run ``architecture`` (frozen, eval mode) over the labelled images of ``data``."""
    from PIL import Image

    dataset = open_dataset(data)
    classes = dataset.classes
    labels = np.array([classes.index(label) for label in dataset.labels])
    chosen = _stratified(labels, samples, seed)
    created, source = create_model(architecture, weights, num_classes=1000)
    # A state-dict file's classifier is dropped on load (training replaces it): no source-head probabilities then.
    has_head = not source.startswith("file:") or str(weights).endswith(".safetensors")
    on = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model: Any = created.eval().requires_grad_(False).to(on)   # timm's forward_features / forward_head
    mean, std, side = normalisation(model)
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)
    features, probabilities = [], []
    with torch.inference_mode():
        for start in range(0, len(chosen), batch_size):
            batch = np.stack([np.asarray(Image.fromarray(load_image(dataset.paths[i])).resize(
                (side, side), Image.Resampling.BILINEAR)) for i in chosen[start:start + batch_size]])
            images = (torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0 - mean_t) / std_t
            maps = model.forward_features(images.to(on))
            features.append(model.forward_head(maps, pre_logits=True).float().cpu().numpy())
            if has_head:
                probabilities.append(model.forward_head(maps).float().softmax(dim=1).cpu().numpy())
            if on_batch is not None:
                on_batch(len(batch))
    return Probe(architecture=architecture, features=np.concatenate(features).astype(np.float64),
                 probabilities=np.concatenate(probabilities).astype(np.float64) if has_head else None,
                 labels=labels[chosen], classes=classes, weights_source=source)


def _stratified(labels: np.ndarray, samples: int | None, seed: int) -> np.ndarray:
    """Indices of a seeded subset with every class's share kept (all images when ``samples`` covers them)."""
    if samples is None or samples >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        take = max(1, round(samples * len(members) / len(labels)))
        picked.extend(rng.choice(members, size=min(take, len(members)), replace=False))
    return np.sort(np.array(picked))


def transferability_reranker(data: str | os.PathLike, score_name: str, *, samples: int | None = 500,
                             device: str | None = None, seed: int = 0):
    """A ``rerank`` for :func:`tfp_mlflow.recommend.recommend`: architecture suggestions ordered by ``score_name``
    on ``data``'s labelled images (best first; an architecture whose weights do not load here goes last, unscored)."""
    from tfp_mlflow.transferability import SCORES, score

    if score_name not in SCORES:
        raise BadInputError(f"unknown score {score_name!r} for --rerank; choose from {', '.join(SCORES)}")

    def rerank(items: list) -> tuple[str, list]:
        values: dict[str, float | None] = {}
        for item in items:   # tfp_mlflow.recommendation.Suggestion of architecture scenarios
            name = item.architecture
            if name not in values:
                try:
                    probe = probe_model(data, name, samples=samples, device=device, seed=seed)
                    values[name] = score(score_name, probe.labels, features=probe.features,
                                         probabilities=probe.probabilities)
                except TfpError as exc:  # weights not loadable here, or no source head for a label score
                    values[name] = None
                    item.notes.append(f"not scored: {exc}")
            item.transferability = {"score": score_name, "value": values[name]}
        ranked = sorted(items, key=lambda i: (values[i.architecture] is None, -(values[i.architecture] or 0)))
        return score_name, ranked

    return rerank
