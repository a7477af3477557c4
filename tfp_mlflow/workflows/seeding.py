"""``tfp seed``: a starter cloud from public datasets, one plan (YAML) at a time.

A plan lists datasets where they live (``medmnist:...``, ``hf:...``, or a local folder or manifest) with their
domain, keywords and licence, and, for a dataset that is one of the published study's tasks, that task's name.
For each dataset, in order:

1. **fingerprint** it with the cloud's spec and **contribute** it (shareable, its source as the data URI). A
   published task gets the fingerprint attached to its imported task (the study is imported first when missing),
   so its published knowledge becomes reachable by fingerprint; the knowledge keeps saying it was published, and
   what is measured here says it was measured here;
2. measure its **no-transfer baseline** (``tfp train``, contributed as knowledge with the run as evidence).

Rerunning resumes: a step whose result is already in the cloud (a fingerprint this contributor attached from this
source; a baseline this contributor measured) is skipped, so a killed seed loses at most the step it was in.
``dry_run`` says what would run and how long it is expected to take, without touching data.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tfp_mlflow.cloud.store import Cloud
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.fingerprint import validate_keywords, validate_task_name

__all__ = ["SeedEntry", "read_plan", "seed_cloud", "SHIPPED_PLANS", "CPU_IMAGES_PER_SECOND"]

#: Plans shipped with the package, by name (``tfp seed starter``).
SHIPPED_PLANS = {"starter": Path(__file__).resolve().parents[1] / "data" / "seed" / "starter.yaml"}
#: Training throughput on a 2-core CPU at 128 px (benchmarks/README.md, `benchmarks/train.py`), for estimates.
CPU_IMAGES_PER_SECOND = 25.0


@dataclass(frozen=True)
class SeedEntry:
    """One dataset of a plan."""

    source: str
    task: str | None = None
    domain: str = ""
    keywords: tuple[str, ...] = ()
    licence: str = ""
    images: int | None = None       # training images, when known (for the plan's estimate)


@dataclass
class SeedStep:
    task: str
    step: str
    status: str                     # done | skipped | planned
    seconds: float = 0.0
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def read_plan(plan: str | Path) -> list[SeedEntry]:
    """The entries of a plan file (or of a shipped plan named ``starter``); one-line errors for a bad plan."""
    import yaml

    path = SHIPPED_PLANS.get(str(plan), Path(plan))
    if not path.is_file():
        raise BadInputError(f"seed plan {str(plan)!r} does not exist; give a YAML file or one of "
                            f"{', '.join(SHIPPED_PLANS)}")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BadInputError(f"seed plan {str(path)!r} is not valid YAML ({str(exc).splitlines()[0]})") from None
    items = document.get("datasets") if isinstance(document, dict) else None
    if not isinstance(items, list) or not items:
        raise BadInputError(f"seed plan {str(path)!r} needs a list under 'datasets:' (each with a 'source:')")
    entries = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict) or not isinstance(item.get("source"), str):
            raise BadInputError(f"seed plan {str(path)!r} entry {number} needs a 'source:' (medmnist:..., hf:... or "
                                f"a path)")
        unknown = set(item) - {"source", "task", "domain", "keywords", "licence", "images"}
        if unknown:
            raise BadInputError(f"seed plan {str(path)!r} entry {number} has unknown fields "
                                f"{', '.join(sorted(unknown))}")
        source = item["source"]
        if not source.startswith(("medmnist:", "hf:")) and not Path(source).is_absolute():
            source = str((path.parent / source).resolve())          # relative to the plan
        entries.append(SeedEntry(source=source,
                                 task=validate_task_name(item["task"]) if item.get("task") else None,
                                 domain=str(item.get("domain", "")), licence=str(item.get("licence", "")),
                                 keywords=validate_keywords(item.get("keywords") or []),
                                 images=int(item["images"]) if item.get("images") else None))
    return entries


def seed_cloud(plan: str | Path | Sequence[SeedEntry], cloud: Cloud, *, samples: int = 1000, epochs: int = 3,
               image_size: int = 128, shrink: int | None = None, baseline: bool = True, dry_run: bool = False,
               device: str | None = None, progress: bool = True,
               on_step: Callable[[SeedStep], None] | None = None) -> list[SeedStep]:
    """Run (or with ``dry_run`` plan) every entry's steps; returns what each step did."""
    from tfp_mlflow.cloud.records import contributor as current_contributor
    from tfp_mlflow.workflows.recommending import CPU_DRAWS_PER_SECOND

    entries = list(plan) if not isinstance(plan, (str, Path)) else read_plan(plan)
    me = current_contributor()
    published = _published_tasks()
    steps: list[SeedStep] = []

    def report(step: SeedStep) -> None:
        steps.append(step)
        if on_step is not None:
            on_step(step)

    for number, entry in enumerate(entries, start=1):
        name = entry.task or _task_name(entry.source, open_data=not dry_run)
        existing = cloud.task(name) if name else None
        fingerprinted = (existing is not None and existing.has_fingerprint and existing.contributor == me
                         and existing.data_uri == entry.source)
        measured = bool(name) and any(k.contributor == me for k in cloud.knowledge(name, ["baseline"])) \
            if existing is not None else False
        label = f"[{number}/{len(entries)}] {name or entry.source}"
        if dry_run:
            images = min(entry.images, shrink) if shrink and entry.images else entry.images
            report(SeedStep(label, "fingerprint", "skipped" if fingerprinted else "planned",
                            0.0 if fingerprinted else samples / CPU_DRAWS_PER_SECOND,
                            "published task: attach" if entry.task in published else ""))
            if baseline:
                train_s = epochs * images / CPU_IMAGES_PER_SECOND * (image_size / 128) ** 2 if images else 0.0
                report(SeedStep(label, "baseline", "skipped" if measured else "planned", 0.0 if measured else train_s,
                                "" if images or measured else "size unknown until the data is read"))
            continue
        if fingerprinted:
            report(SeedStep(label, "fingerprint", "skipped", note="already in the cloud from this source"))
        else:
            started = time.perf_counter()
            note = _fingerprint_and_contribute(cloud, entry, name, samples=samples, device=device,
                                               published=entry.task in published, progress=progress)
            report(SeedStep(label, "fingerprint", "done", time.perf_counter() - started, note))
        if not baseline:
            continue
        if measured:
            report(SeedStep(label, "baseline", "skipped", note="this contributor's baseline is in the cloud"))
            continue
        started = time.perf_counter()
        result = _measure_baseline(cloud, entry, name, epochs=epochs, image_size=image_size, shrink=shrink,
                                   device=device, progress=progress)
        report(SeedStep(label, "baseline", "done", time.perf_counter() - started,
                        f"balanced accuracy {result.balanced_accuracy:.3f} (run {result.run_id[:12]})",
                        {"run_id": result.run_id, "balanced_accuracy": result.balanced_accuracy}))
    return steps


def _published_tasks() -> set[str]:
    from tfp_mlflow.reference import Reference, bundled_reference

    return set(Reference.load(bundled_reference()).tasks)


def _task_name(source: str, *, open_data: bool) -> str | None:
    """The task name a source gets (its cached manifest's name for a library dataset)."""
    from tfp_mlflow.extract.sources import is_library_source, resolve_source

    if is_library_source(source):
        return Path(resolve_source(source)).stem if open_data else None
    path = Path(source)
    return validate_task_name(path.stem if path.suffix.lower() == ".csv" else path.name)


def _fingerprint_and_contribute(cloud: Cloud, entry: SeedEntry, name: str, *, samples: int, device: str | None,
                                published: bool, progress: bool) -> str:
    from tfp_mlflow.extract import fingerprint_dataset
    from tfp_mlflow.spec import default_spec

    spec = cloud.spec() or default_spec()
    note = ""
    if published and cloud.task(name) is None:
        from tfp_mlflow.cloud.reference_import import import_reference
        from tfp_mlflow.reference import Reference, bundled_reference

        import_reference(cloud, Reference.load(bundled_reference()))
        note = "imported the published study; "
    fingerprint = fingerprint_dataset(entry.source, spec=spec, samples=samples, name=name,
                                      keywords=entry.keywords, device=device, progress=progress)
    # A published task keeps its published fields where the plan gives none (contribute keeps them).
    cloud.contribute(fingerprint, name=name, domain=entry.domain or None, keywords=entry.keywords or None,
                     data_uri=entry.source, shareable=True, spec=spec)
    return note + (f"attached to the published task {name}" if published else f"contributed {name}") + \
        f" ({fingerprint.num_images:,} images, {fingerprint.num_draws:,} draws)"


def _measure_baseline(cloud: Cloud, entry: SeedEntry, name: str, *, epochs: int, image_size: int,
                      shrink: int | None, device: str | None, progress: bool):
    from tfp_mlflow.train import TrainConfig, train

    provenance = {"seeded_from": entry.source, "licence": entry.licence or "see the source",
                  "measured_by": "tfp seed"}
    config = TrainConfig(target=entry.source, name=name, epochs=epochs, image_size=image_size, shrink=shrink,
                         device=device, provenance=provenance)
    return train(config, cloud=cloud, contribute=True, progress=progress, log_model=False)
