"""Commands on fingerprint files and specs: selectors, distances, inspect, fingerprint, merge, spec."""
from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import click
import numpy as np
from rich.table import Table

from tfp_mlflow._paths import as_ordinary_file
from tfp_mlflow.cli import console, data_source, main
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.selectors import (
    DEFAULT_SELECTOR,
    describe_selector,
    get_selector,
    list_selectors,
    selector_kind,
    selector_needs,
)


@main.command("selectors")
def selectors_command() -> None:
    """List the registered task selectors: distances, and those learned from measured outcomes."""

    table = Table(title="task selectors (lower distance = closer source)")
    table.add_column("name", style="bold")
    table.add_column("kind")
    table.add_column("needs")
    table.add_column("description")
    for name in list_selectors():
        table.add_row(name, selector_kind(name), selector_needs(name), describe_selector(name))
    console.print(table)


def _load_tasks(paths: Sequence[str], spec_path: str | None) -> list:
    from tfp_mlflow.fingerprint import Fingerprint
    from tfp_mlflow.spec import FingerprintSpec
    from tfp_mlflow.task import Task

    spec = FingerprintSpec.load(spec_path) if spec_path else None
    tasks = [Task.from_fingerprint(Fingerprint.load(path, spec)) for path in paths]
    names = [task.name for task in tasks]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise BadInputError(f"several fingerprints are named {', '.join(duplicates)}; task names must be unique")
    return tasks


@main.command("distances")
@click.argument("fingerprints", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--selector", "selector_name", default=DEFAULT_SELECTOR, show_default=True,
              help="Selector (see `tfp selectors`).")
@click.option("--target", type=click.Path(dir_okay=False), help="Rank FINGERPRINTS as sources for this target.")
@click.option("--top-k", type=int, default=None, help="Show only the best k sources (with --target).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Write the distance matrix as CSV "
              "(rows sources, columns targets; 0 on the diagonal, as in the reference).")
@click.option("--spec", "spec_path", type=click.Path(dir_okay=False), help="Also check every fingerprint "
              "against this spec file.")
def distances_command(fingerprints: tuple[str, ...], selector_name: str, target: str | None, top_k: int | None,
                      csv_path: str | None, spec_path: str | None) -> None:
    """Distances between fingerprint files, as a ranking (--target) or a matrix."""
    from tfp_mlflow.ranking import rank_sources

    selector = get_selector(selector_name)
    sources = _load_tasks(fingerprints, spec_path)
    prepared = selector.prepare(sources)
    targets = _load_tasks([target], spec_path) if target else sources
    matrix = selector.matrix(prepared, targets)
    for j, target_task in enumerate(targets):
        matrix[[i for i, s in enumerate(prepared.names) if s == target_task.name], j] = 0.0
    if csv_path:
        _write_matrix_csv(csv_path, prepared.names, [t.name for t in targets], matrix)
        console.print(f"wrote {matrix.shape[0]} x {matrix.shape[1]} {selector_name} distances to {csv_path}")
    if target:
        ranking = rank_sources(selector, targets[0], prepared, top_k=top_k)
        table = Table(title=f"sources for {targets[0].name} by {selector_name} (lower is closer)")
        for column in ("rank", "source", "distance", "samples"):
            table.add_column(column, justify="left" if column == "source" else "right")
        for entry in ranking:
            table.add_row(str(entry.rank), entry.name, f"{entry.distance:.6g}", f"{entry.num_images:,}")
        console.print(table)
    elif not csv_path:
        table = Table(title=f"{selector_name} distances (rows sources, columns targets)")
        table.add_column("source")
        for name in prepared.names:
            table.add_column(name, justify="right", overflow="fold")
        for i, name in enumerate(prepared.names):
            table.add_row(name, *(f"{v:.4g}" for v in matrix[i]))
        console.print(table)


def _write_matrix_csv(path: str, sources: Sequence[str], targets: Sequence[str], matrix: np.ndarray) -> None:

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    as_ordinary_file(fd)
    with os.fdopen(fd, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", *targets])
        for name, row in zip(sources, matrix):
            writer.writerow([name, *(repr(float(v)) for v in row)])
    os.replace(tmp, out)


@main.command("inspect")
@click.argument("fingerprint", type=click.Path(dir_okay=False))
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Draw the fingerprint to this PNG.")
@click.option("--variant", default=None, help="Variant to draw (default: small).")
def inspect_command(fingerprint: str, plot_path: str | None, variant: str | None) -> None:
    """Summarise a fingerprint file (and draw it)."""
    from tfp_mlflow.fingerprint import Fingerprint

    fp = Fingerprint.load(fingerprint)
    table = Table(title=f"fingerprint {fingerprint}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    means = fp.means
    rows = [("task", fp.name), ("keywords", ", ".join(fp.keywords) or "-"), ("spec", fp.spec_id),
            ("images", f"{fp.num_images:,} in {fp.num_classes} classes"),
            ("class counts", ", ".join(f"{k}: {v}" for k, v in fp.class_counts.items()) or "-"),
            ("draws", f"{fp.num_draws:,} (seed {fp.seed})"),
            ("variants", ", ".join(f"{v} ({fp.counts[v].shape[1]} bins)" for v in fp.variants)),
            ("features", f"{fp.num_features} (means {means.min():.3g} .. {means.max():.3g}, "
                         f"mean {means.mean():.3g})"),
            ("second moments", "yes" if fp.second_moments is not None else "no"),
            ("made by", f"tfp {fp.extra.get('tfp_version', '?')}"
                        + (f", shard {fp.extra['shard']}" if "shard" in fp.extra else ""))]
    for key, value in rows:
        table.add_row(key, str(value))
    console.print(table)
    if plot_path:
        from tfp_mlflow.plots import plot_fingerprint

        plot_fingerprint(fp, plot_path, variant)
        console.print(f"drew {plot_path}")


@main.command("fingerprint")
@click.argument("data", type=click.Path(exists=False))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Fingerprint file to write.")
@click.option("--spec", "spec_path", type=click.Path(dir_okay=False), help="Spec file (default: the shipped spec).")
@click.option("--samples", type=int, default=None, help="Draws with replacement (default: the spec's, 10,000).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the draw.")
@click.option("--backbone", default=None, help="timm name; must match the spec's backbone.")
@click.option("--weights", type=click.Path(dir_okay=False), help="Local weights (safetensors or state dict).")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--workers", type=int, default=None, help="DataLoader workers (default: cores - 1, at most 4).")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when present).")
@click.option("--precision", type=click.Choice(["auto", "32", "16-mixed", "bf16-mixed"]), default="auto",
              show_default=True, help="Forward pass under autocast; auto: 16-mixed on a GPU, 32 on a CPU "
              "(how far each moves distances: docs/usage.md).")
@click.option("--name", default=None, help="Task name (default: the folder or manifest name).")
@click.option("--keywords", default="", help="Comma-separated keywords (modality, anatomy, entities).")
@click.option("--split", default="train", show_default=True, help="Manifest split to use.")
@click.option("--shard", default=None, help="i/N: compute the i-th of N parts (combine with `tfp merge`).")
@click.option("--moments", is_flag=True, help="Also keep second moments (for the fid selector).")
@click.option("--skip-unreadable", is_flag=True, help="Skip images that cannot be decoded and report them.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Also draw the fingerprint.")
@data_source
def fingerprint_command(data: str, out_path: str, spec_path: str | None, samples: int | None, seed: int,
                        backbone: str | None, weights: str | None, batch_size: int, workers: int | None,
                        device: str | None, precision: str, name: str | None, keywords: str, split: str,
                        shard: str | None, moments: bool, skip_unreadable: bool, plot_path: str | None) -> None:
    """Fingerprint a dataset: a folder of class folders, a CSV manifest (path,label[,split]), DICOM, or a library
    dataset (medmnist:NAME[@SIZE], hf:ORG/NAME[:CONFIG][@SPLIT], a folder saved with save_to_disk)."""
    from tfp_mlflow.extract import Draws, fingerprint_dataset
    from tfp_mlflow.fingerprint import validate_keywords
    from tfp_mlflow.spec import FingerprintSpec, default_spec

    spec = FingerprintSpec.load(spec_path) if spec_path else default_spec()
    if backbone and backbone != spec.backbone:
        raise BadInputError(f"--backbone {backbone} differs from the spec's {spec.backbone}; create a spec for it "
                            f"with `tfp spec create --backbone {backbone}` and pass --spec")
    if batch_size < 1:
        raise BadInputError("--batch-size must be at least 1")
    draws = Draws(samples=samples, seed=seed, batch_size=batch_size, workers=workers, device=device, shard=shard,
                  skip_unreadable=skip_unreadable, precision=None if precision == "auto" else precision)
    fp = fingerprint_dataset(data, spec=spec, draws=draws, weights=weights, name=name, moments=moments, split=split,
                             keywords=validate_keywords(keywords or []))
    fp.save(out_path)
    skipped = fp.extra.get("skipped_unreadable")
    console.print(f"wrote {out_path}: {fp.name}, {fp.num_draws:,} draws of {fp.num_images:,} images in "
                  f"{fp.num_classes} classes, spec {fp.spec_id}" + (f"; skipped {skipped} unreadable images"
                                                                    if skipped else ""))
    if plot_path:
        from tfp_mlflow.plots import plot_fingerprint

        plot_fingerprint(fp, plot_path)
        console.print(f"drew {plot_path}")


@main.command("merge")
@click.argument("shards", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False))
def merge_command(shards: tuple[str, ...], out_path: str) -> None:
    """Combine fingerprints of shards (tfp fingerprint --shard i/N) into the fingerprint of the whole."""
    from tfp_mlflow.builder import merge
    from tfp_mlflow.fingerprint import Fingerprint

    parts = [Fingerprint.load(path) for path in shards]
    declared = {p.extra.get("shard") for p in parts}
    if None not in declared and len(declared) != len(parts):
        raise BadInputError(f"the same shard was given twice ({', '.join(sorted(map(str, declared)))})")
    merged = merge(*parts)
    merged.save(out_path)
    console.print(f"wrote {out_path}: {merged.name}, {merged.num_draws:,} draws from {len(parts)} shards")


@main.group("spec")
def spec_group() -> None:
    """Fingerprint specs: create (calibrate bin edges) and show."""


@spec_group.command("create")
@click.option("--from", "datasets", multiple=True, required=True, type=click.Path(),
              help="Reference dataset (repeat for several).")
@click.option("--backbone", default="tf_efficientnet_lite0", show_default=True, help="timm name.")
@click.option("--weights", type=click.Path(dir_okay=False), help="Local weights (safetensors or state dict).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False))
@click.option("--samples", type=int, default=1000, show_default=True, help="Draws per reference dataset.")
@click.option("--fingerprint-samples", type=int, default=10_000, show_default=True,
              help="Default draws of fingerprints made with this spec.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None)
def spec_create_command(datasets: tuple[str, ...], backbone: str, weights: str | None, out_path: str, samples: int,
                        fingerprint_samples: int, seed: int, device: str | None) -> None:
    """Calibrate a spec: per-feature 5 %/95 % quantiles of the backbone's features over reference datasets."""
    from tfp_mlflow.extract import create_spec

    spec = create_spec(list(datasets), backbone_name=backbone, weights=weights, draws_per_dataset=samples,
                       seed=seed, device=device, samples=fingerprint_samples)
    spec.save(out_path)
    console.print(f"wrote {out_path}: spec {spec.id}, {spec.backbone}, {spec.num_features} features")


@spec_group.command("show")
@click.argument("spec_file", required=False, type=click.Path(dir_okay=False))
def spec_show_command(spec_file: str | None) -> None:
    """Describe a spec file (default: the shipped spec)."""
    from tfp_mlflow.spec import FingerprintSpec, default_spec

    spec = FingerprintSpec.load(spec_file) if spec_file else default_spec()
    table = Table(title=f"spec {spec.id}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in [("backbone", spec.backbone), ("weights sha256", spec.weights_sha256),
                       ("features", spec.num_features), ("input", f"resize {spec.resize}, crop {spec.input_size}"),
                       ("normalisation", f"mean {spec.mean}, std {spec.std}"), ("draws", spec.samples),
                       ("variants", dict(spec.variants)), ("provenance", dict(spec.provenance))]:
        table.add_row(key, str(value))
    console.print(table)
