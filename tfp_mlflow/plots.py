"""Figures people would rather look at than read: fingerprints, rankings, selector evaluations and training
runs (matplotlib, Agg backend)."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from tfp_mlflow.fingerprint import Fingerprint

__all__ = ["plot_fingerprint", "plot_ranking", "plot_gain_curves", "plot_rank_distribution", "plot_confusion_matrix",
           "plot_learning_curves"]


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
                 title: str, xlabel: str = "distance (lower is closer)") -> Path:
    """Horizontal bar chart in the given order (first on top): sources' distances, or models' scores."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2), layout="constrained")
    axes.barh(range(len(names)), distances, color="tab:green")
    axes.set_yticks(range(len(names)), names)
    axes.invert_yaxis()
    axes.set(xlabel=xlabel, title=title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_gain_curves(gain_curve: Mapping[str, Mapping[str, Sequence[float | None]]], path: str | os.PathLike,
                     ylabel: str = "targets improved (BA, best of top k) %") -> Path:
    """A value per shot k, per scenario and selector: the share of targets improved by the best of the top k (the
    paper's Fig. 4 top), or the mean AUROC improvement of the best of the top k (Fig. 4 bottom)."""
    plt = _pyplot()
    scenarios = list(next(iter(gain_curve.values())))
    figure, axes = plt.subplots(1, len(scenarios), figsize=(3.2 * len(scenarios), 3.2), sharey=True)
    for axis, scenario in zip(np.atleast_1d(axes), scenarios):
        for selector, curves in gain_curve.items():
            values = curves[scenario]
            axis.plot(range(1, len(values) + 1), values, marker="o", label=selector)
        axis.set_title(scenario)
        axis.set_xlabel("shots k")
        axis.set_xticks(range(1, len(values) + 1))
        axis.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel(ylabel)
    np.atleast_1d(axes)[-1].legend(fontsize=8)
    return _save(figure, path)


def plot_rank_distribution(fractions: dict[str, dict[str, list[float]]], path: str | os.PathLike) -> Path:
    """Bootstrap rank distribution per scenario and selector (the paper's Fig. 5): bubble area = share."""
    plt = _pyplot()
    scenarios = list(fractions)
    figure, axes = plt.subplots(1, len(scenarios), figsize=(3.2 * len(scenarios), 3.4), sharey=True)
    for axis, scenario in zip(np.atleast_1d(axes), scenarios):
        selectors = list(fractions[scenario])
        for x, selector in enumerate(selectors):
            shares = np.asarray(fractions[scenario][selector])
            ranks = np.arange(1, len(shares) + 1)
            axis.scatter(np.full(len(ranks), x), ranks, s=600 * shares, alpha=0.7)
        axis.set_title(scenario)
        axis.set_xticks(range(len(selectors)), selectors, rotation=45, ha="right", fontsize=8)
        axis.invert_yaxis()
    np.atleast_1d(axes)[0].set_ylabel("bootstrap rank (1 = best)")
    return _save(figure, path)


def plot_confusion_matrix(matrix: np.ndarray, classes: Sequence[str], path: str | os.PathLike, *,
                          title: str = "") -> Path:
    """Confusion matrix (rows: true class, columns: predicted), counts annotated, colour by row share."""
    plt = _pyplot()
    matrix = np.asarray(matrix)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    side = 2.5 + 0.6 * len(classes)
    figure, axes = plt.subplots(figsize=(side + 1, side), layout="constrained")
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(matrix):
        axes.text(j, i, str(count), ha="center", va="center", color="white" if shares[i, j] > 0.5 else "black")
    axes.set(xticks=range(len(classes)), yticks=range(len(classes)), xticklabels=classes, yticklabels=classes,
             xlabel="predicted", ylabel="true", title=title)
    figure.colorbar(image, ax=axes, label="share of the true class")
    return _save(figure, path)


def plot_learning_curves(history: Sequence[dict[str, float]], path: str | os.PathLike, *, title: str = "") -> Path:
    """Per-epoch losses (left) and held-out balanced accuracy / AUROC (right) of a training run."""
    plt = _pyplot()
    epochs = np.arange(1, len(history) + 1)
    figure, (losses, scores) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for axes, names in ((losses, ("train_loss", "val_loss")), (scores, ("val_balanced_accuracy", "val_auroc"))):
        for name in names:
            values = [row.get(name, np.nan) for row in history]
            if np.isfinite(values).any():
                axes.plot(epochs, values, marker="o", label=name)
        axes.set(xlabel="epoch")
        axes.legend()
    scores.set(ylim=(0, 1.02))
    figure.suptitle(title)
    return _save(figure, path)


def _save(figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if figure.get_layout_engine() is None:
        figure.tight_layout()
    figure.savefig(path, dpi=110)
    _pyplot().close(figure)
    return path
