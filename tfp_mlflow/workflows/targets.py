"""A query's target as a fingerprint: one given, a saved ``.npz`` loaded (no torch imported), or a dataset drawn
with the cloud's spec, as many times as suits the device (:func:`query_draws`), and kept: the same files, spec
and draws are drawn once (``tfp recommend DATA`` then ``tfp tune DATA``)."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, overload

from tfp_mlflow._paths import default_cache_dir
from tfp_mlflow.cloud import KnowledgeStore
from tfp_mlflow.fingerprint import Fingerprint

if TYPE_CHECKING:
    from tfp_mlflow.extract import ImageDataset

__all__ = ["Target", "target_fingerprint", "is_fingerprint_file", "query_draws", "QUERY_DRAWS_CPU",
           "CPU_DRAWS_PER_SECOND"]

Target = Fingerprint | str | os.PathLike | None


def is_fingerprint_file(data: str | os.PathLike) -> bool:
    """A saved fingerprint (``.npz`` file) rather than a dataset."""
    return Path(data).suffix == ".npz" and Path(data).is_file()


#: Draws of a query's fingerprint on a CPU (``benchmarks/draws.py``: the ranking from 1,000 draws agrees with the
#: 10,000-draw one almost everywhere, in a tenth of the time); on a GPU the spec's own number (10,000).
QUERY_DRAWS_CPU = 1000
#: Draws per second of the shipped backbone on a 2-core CPU (26.8 measured by benchmarks/draws.py), for the time
#: said beforehand.
CPU_DRAWS_PER_SECOND = 26.8


def query_draws(samples: int | None, spec_samples: int) -> tuple[int, str]:
    """How many draws a query's fingerprint takes here, and the device: ``samples`` when given, else the spec's
    on a GPU and :data:`QUERY_DRAWS_CPU` on a CPU."""
    from tfp_mlflow.extract.pipeline import default_device

    device = default_device().type
    if samples:
        return samples, device
    return (spec_samples if device == "cuda" else min(spec_samples, QUERY_DRAWS_CPU)), device


@overload
def target_fingerprint(data: None, cloud: KnowledgeStore | None, *, samples: int | None = None,
                       name: str | None = None, keywords: Sequence[str] = (), progress: bool = True,
                       on_note=None) -> None: ...


@overload
def target_fingerprint(data: Fingerprint | str | os.PathLike | ImageDataset, cloud: KnowledgeStore | None, *,
                       samples: int | None = None, name: str | None = None, keywords: Sequence[str] = (),
                       progress: bool = True, on_note=None) -> Fingerprint: ...


def target_fingerprint(data: Target | ImageDataset, cloud: KnowledgeStore | None, *, samples: int | None = None,
                       name: str | None = None, keywords: Sequence[str] = (), progress: bool = True,
                       on_note=None) -> Fingerprint | None:
    """``data`` as a fingerprint: returned as it is, loaded from a ``.npz``, or extracted from a dataset with the
    cloud's spec (the shipped default while the cloud has none) and :func:`query_draws` draws. ``None`` stays
    ``None``."""
    if data is None or isinstance(data, Fingerprint):
        return data
    if isinstance(data, (str, os.PathLike)) and is_fingerprint_file(data):
        return Fingerprint.load(data)     # a file: no torch imported
    from tfp_mlflow.extract import Draws, ImageDataset, fingerprint_dataset, open_dataset
    from tfp_mlflow.spec import default_spec

    if not isinstance(data, ImageDataset) and is_fingerprint_file(data):
        return Fingerprint.load(data)
    spec = (cloud.spec() if cloud is not None else None) or default_spec()
    draws, device = query_draws(samples, spec.samples)
    # listed once: for the key below and for the draws
    dataset = data if isinstance(data, ImageDataset) else open_dataset(str(data))
    label = dataset.name or Path(dataset.root).name
    kept = _drawn_before(dataset, spec.id, draws)
    if kept.is_file():   # `tfp recommend DATA` then `tfp tune DATA`: the same files, spec and draws, drawn once
        fingerprint = Fingerprint.load(kept)
        if on_note is not None:
            on_note(f"reusing the fingerprint of {label} drawn before ({draws:,} draws, same files and "
                    f"spec; {kept.parent})")
        return replace(fingerprint, name=name or fingerprint.name, keywords=tuple(keywords) or fingerprint.keywords)
    if on_note is not None and device == "cpu":
        on_note(f"drawing {draws:,} crops of {label} on the CPU: about {draws / CPU_DRAWS_PER_SECOND:.0f} s "
                f"on 2 cores (--samples sets the number; {spec.samples:,} is the spec's, for a GPU)")
    fingerprint = fingerprint_dataset(dataset, spec=spec, name=name, keywords=list(keywords), progress=progress,
                                      draws=Draws(samples=draws))
    fingerprint.save(kept)
    return fingerprint


def _drawn_before(dataset, spec_id: str, draws: int) -> Path:
    """Where a query's fingerprint of an opened dataset is kept: named by the spec, the draws and every image's
    path, size and modification time, so a changed, added or removed file draws again."""
    digest = hashlib.sha256(f"{spec_id}:{draws}:".encode())
    for path, label in zip(dataset.paths, dataset.labels):
        stat = Path(path).stat()
        digest.update(f"{Path(path).absolute()}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return default_cache_dir() / "queries" / f"{digest.hexdigest()[:32]}.npz"
