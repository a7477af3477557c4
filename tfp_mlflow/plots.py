"""Figures people would rather look at than read: fingerprints and rankings (matplotlib, Agg backend)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from tfp_mlflow.fingerprint import Fingerprint

__all__ = ["plot_fingerprint", "plot_ranking"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_fingerprint(fingerprint: Fingerprint, path: str | os.PathLike, variant: str | None = None) -> Path:
    """Heatmap of the per-feature histograms (rows: features sorted by mean; columns: bins), with the means."""
    plt = _pyplot()
    variant = variant or ("small" if "small" in fingerprint.counts else fingerprint.variants[0])
    order = np.argsort(fingerprint.means)
    histogram = fingerprint.histogram(variant)[order]
    figure, (heat, means) = plt.subplots(1, 2, figsize=(9, 6), width_ratios=(5, 1), sharey=True,
                                         layout="constrained")
    image = heat.imshow(np.log10(histogram + 1.0 / fingerprint.num_draws), aspect="auto", cmap="magma",
                        interpolation="nearest", origin="lower")
    heat.set(xlabel=f"bin ({histogram.shape[1]} per feature, spec edges)",
             ylabel=f"feature (sorted by mean, m = {fingerprint.num_features})",
             title=f"{fingerprint.name}: {variant} fingerprint, {fingerprint.num_draws:,} draws")
    figure.colorbar(image, ax=heat, label="log10 share of draws")
    means.plot(fingerprint.means[order], np.arange(len(order)), color="tab:blue")
    means.set(xlabel="feature mean")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_ranking(names: Sequence[str], distances: Sequence[float], path: str | os.PathLike, *,
                 title: str) -> Path:
    """Horizontal bar chart of the top sources' distances (closest on top)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2), layout="constrained")
    axes.barh(range(len(names)), distances, color="tab:green")
    axes.set_yticks(range(len(names)), names)
    axes.invert_yaxis()
    axes.set(xlabel="distance (lower is closer)", title=title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
