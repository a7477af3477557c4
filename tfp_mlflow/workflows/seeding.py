"""``tfp seed``: a starter cloud from public datasets, one plan (YAML) at a time.

A plan lists datasets where they live (``medmnist:...``, ``hf:...``, or a local folder or manifest) with their
domain, keywords and licence, and, for a dataset that is one of the published study's tasks, that task's name.
For each dataset, in order:

1. **fingerprint** it with the cloud's spec and **contribute** it (shareable, its source as the data URI). A
   published task gets the fingerprint attached to its imported task (the study is imported first when missing),
   so its published knowledge becomes reachable by fingerprint; the knowledge keeps saying it was published, and
   what is measured here says it was measured here;
2. measure its **no-transfer baseline** (``tfp train``, contributed as knowledge with the run as evidence);
3. with ``tune_trials``, a short **architecture and policy study** (``tfp tune``, warm-started from the cloud; its
   best configuration is contributed);
4. with ``transfer``, **transfer outcomes** from every other dataset of the plan (pretrain on it, fine-tune on this
   one), contributed as pretraining knowledge: the cloud then knows which seeded task helps which.

Rerunning resumes: a step whose result is already in the cloud (a fingerprint this contributor attached from this
source; a baseline, study or transfer outcome this contributor measured) is skipped, so a killed seed loses at most
the step it was in. ``dry_run`` says what would run and how long it is expected to take, without touching data.

**Several machines**: with ``storage`` (an Optuna RDB URL all of them reach, e.g. PostgreSQL, or ``mlflow``: the
cloud's own store), every dataset is a
trial of one Optuna study named after the plan. A worker claims a dataset by taking its waiting trial (the storage
hands each to one worker), sends heartbeats while it works, and, once nothing is left to claim, waits for the
datasets others hold: a worker silent for three heartbeats is taken as dead, and its dataset is claimed again by
whoever is still running (resuming from what the dead one had already put in the cloud).
"""
from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfp_mlflow.cloud.base import KnowledgeStore
from tfp_mlflow.cloud.schema import KnowledgeKind
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.fingerprint import validate_keywords, validate_task_name
from tfp_mlflow.workflows.claims import claim_each

__all__ = ["SeedEntry", "SeedTraining", "SeedWork", "read_plan", "seed_cloud", "SHIPPED_PLANS", "CPU_IMAGES_PER_SECOND"]

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


@dataclass(frozen=True)
class SeedTraining:
    """How every training of a seed run trains: the baseline, each trial of the study and each transfer alike."""

    epochs: int = 3
    image_size: int = 128
    shrink: int | None = None       # train on at most this many images
    device: str | None = None       # cpu, cuda, mps (default: the best available)
    progress: bool = True
    trusted: str | None = None      # the contributors a study's warm start may learn from (``--trusted``)


@dataclass(frozen=True)
class SeedWork:
    """Which steps a seed run takes for each dataset."""

    samples: int = 1000             # fingerprint draws
    baseline: bool = True
    tune_trials: int = 0            # 0: no study
    transfer: bool = False          # transfer outcomes from every other dataset of the plan


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


def seed_cloud(plan: str | Path | Sequence[SeedEntry], cloud: KnowledgeStore, *, samples: int = 1000, epochs: int = 3,
               image_size: int = 128, shrink: int | None = None, baseline: bool = True, tune_trials: int = 0,
               transfer: bool = False, dry_run: bool = False, device: str | None = None, progress: bool = True,
               storage: str | None = None, heartbeat: int = 60, trusted: str | None = None,
               data_root: str | os.PathLike | None = None,
               on_step: Callable[[SeedStep], None] | None = None) -> list[SeedStep]:
    """Run (or with ``dry_run`` plan) every entry's steps; returns what each step did (by this worker).

    ``data_root``: where MedMNIST files are read from and downloaded to (default: ``$TFP_DATA_ROOT``, else
    ``~/.medmnist``)."""
    entries = list(plan) if not isinstance(plan, (str, Path)) else read_plan(plan)
    if tune_trials < 0:
        raise BadInputError(f"--tune-trials must be 0 or more, got {tune_trials}")
    if heartbeat < 1:
        raise BadInputError(f"--heartbeat must be at least 1 second, got {heartbeat}")
    training = SeedTraining(epochs=epochs, image_size=image_size, shrink=shrink, device=device, progress=progress,
                            trusted=trusted)
    work = SeedWork(samples=samples, baseline=baseline, tune_trials=tune_trials, transfer=transfer)
    seeder = _Seeder(cloud, entries, training, work, on_step=on_step, data_root=data_root)
    if dry_run:
        for number, entry in enumerate(entries, start=1):
            seeder.plan(number, entry)
    elif storage is None:
        for number, entry in enumerate(entries, start=1):
            seeder.seed(number, entry)
    else:
        claim_each([entry.source for entry in entries], storage, heartbeat,
                   lambda index: seeder.seed(index + 1, entries[index]), seeder.say, study_prefix="tfp-seed",
                   cloud=cloud)
    return seeder.steps


class _Seeder:
    """The steps of one dataset, each skipped when its result is already in the cloud."""

    def __init__(self, cloud: KnowledgeStore, entries: list[SeedEntry], training: SeedTraining, work: SeedWork, *,
                 on_step: Callable[[SeedStep], None] | None, data_root: str | os.PathLike | None = None) -> None:
        from tfp_mlflow.cloud.records import contributor

        self.cloud, self.entries, self.on_step, self.data_root = cloud, entries, on_step, data_root
        self.training, self.work = training, work
        self.me, self.published = contributor(), _published_tasks()
        self.steps: list[SeedStep] = []

    def report(self, step: SeedStep) -> None:
        self.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)

    def say(self, line: str) -> None:
        self.report(SeedStep("", "note", "note", note=line))

    def _mine(self, name: str, kind: str, provenance: str = "", source: str | None = None) -> bool:
        return any(k.contributor == self.me and k.provenance.startswith(provenance)
                   and (source is None or any(row.source == source for row in k.rows))
                   for k in self.cloud.knowledge(name, [kind]))

    def _state(self, entry: SeedEntry, name: str | None, *, open_data: bool) -> dict[str, Any]:
        """Which steps this contributor has already done for ``entry``, read from the cloud."""
        existing = self.cloud.task(name) if name else None
        others = self._transfer_sources(entry, open_data=open_data)
        if name is None or existing is None:
            return {"fingerprint": False, "baseline": False, "tune": False, "transfer": dict.fromkeys(others, False)}
        return {"fingerprint": existing.has_fingerprint and existing.contributor == self.me
                and existing.data_uri == entry.source,
                "baseline": self._mine(name, KnowledgeKind.BASELINE),
                "tune": self._mine(name, KnowledgeKind.ARCHITECTURE, "tfp tune study"),
                "transfer": {other: self._mine(name, KnowledgeKind.PRETRAINING, source=other) for other in others}}

    def _transfer_sources(self, entry: SeedEntry, *, open_data: bool) -> list[str]:
        """The other datasets of the plan, by task name (by source where the name is not known without data)."""
        if not self.work.transfer:
            return []
        return [e.task or _task_name(e.source, open_data=open_data) or e.source
                for e in self.entries if e is not entry]

    def plan(self, number: int, entry: SeedEntry) -> None:
        from tfp_mlflow.workflows.targets import CPU_DRAWS_PER_SECOND

        w, t = self.work, self.training
        name = entry.task or _task_name(entry.source, open_data=False)
        state = self._state(entry, name, open_data=False)
        label = f"[{number}/{len(self.entries)}] {name or entry.source}"
        images = min(entry.images, t.shrink) if t.shrink and entry.images else entry.images
        run_s = t.epochs * images / CPU_IMAGES_PER_SECOND * (t.image_size / 128) ** 2 if images else 0.0
        unknown = "" if images else "size unknown until the data is read"
        self.report(SeedStep(label, "fingerprint", "skipped" if state["fingerprint"] else "planned",
                             0.0 if state["fingerprint"] else w.samples / CPU_DRAWS_PER_SECOND,
                             "published task: attach" if entry.task in self.published else ""))
        if w.baseline:
            self.report(SeedStep(label, "baseline", "skipped" if state["baseline"] else "planned",
                                 0.0 if state["baseline"] else run_s, "" if state["baseline"] else unknown))
        if w.tune_trials:
            self.report(SeedStep(label, "tune", "skipped" if state["tune"] else "planned",
                                 0.0 if state["tune"] else run_s * w.tune_trials,
                                 f"{w.tune_trials} trials" + (f"; {unknown}" if unknown else "")))
        for source, done in state["transfer"].items():
            self.report(SeedStep(label, f"transfer from {source}", "skipped" if done else "planned",
                                 0.0 if done else 2 * run_s, "pretrain on the source, then fine-tune"))

    def seed(self, number: int, entry: SeedEntry) -> None:
        from tfp_mlflow.extract.sources import is_library_source, resolve_source

        w, cloud = self.work, self.cloud
        if is_library_source(entry.source):   # its files read from data_root once, into the cache the steps read
            resolve_source(entry.source, data_root=self.data_root)
        name = _open_name(entry)
        state = self._state(entry, name, open_data=True)
        label = f"[{number}/{len(self.entries)}] {name}"
        if state["fingerprint"]:
            self.report(SeedStep(label, "fingerprint", "skipped", note="already in the cloud from this source"))
        else:
            started = time.perf_counter()
            note = _fingerprint_and_contribute(cloud, entry, name, samples=w.samples,
                                               device=self.training.device, published=entry.task in self.published,
                                               progress=self.training.progress)
            self.report(SeedStep(label, "fingerprint", "done", time.perf_counter() - started, note))
        if w.baseline:
            if state["baseline"]:
                self.report(SeedStep(label, "baseline", "skipped", note="this contributor's baseline is in the cloud"))
            else:
                started = time.perf_counter()
                result = _train(cloud, entry, name, self.training)
                self.report(SeedStep(label, "baseline", "done", time.perf_counter() - started,
                                     f"balanced accuracy {result.balanced_accuracy:.3f} (run {result.run_id[:12]})",
                                     {"run_id": result.run_id, "balanced_accuracy": result.balanced_accuracy}))
        if w.tune_trials:
            if state["tune"]:
                self.report(SeedStep(label, "tune", "skipped", note="this contributor's study result is in the cloud"))
            else:
                started = time.perf_counter()
                study = _tune(cloud, entry, name, w.tune_trials, self.training)
                self.report(SeedStep(label, "tune", "done", time.perf_counter() - started,
                                     f"best {study.best_params.get('architecture', '?')} with policy "
                                     f"{study.best_params.get('policy', '?')}: balanced accuracy "
                                     f"{(study.best_value or 0.0):.3f} ({len(study.trials)} trials)",
                                     {"study": study.study_name, "best_run_id": study.best_run_id}))
        for source, done in state["transfer"].items():
            step = f"transfer from {source}"
            if done:
                self.report(SeedStep(label, step, "skipped", note="this contributor's outcome is in the cloud"))
                continue
            origin = next(e for e in self.entries if _open_name(e) == source)
            started = time.perf_counter()
            result = _train(cloud, entry, name, self.training, scenario="pretraining", source=source,
                            source_data=_local(origin.source))
            self.report(SeedStep(label, step, "done", time.perf_counter() - started,
                                 f"balanced accuracy {result.balanced_accuracy:.3f} (run {result.run_id[:12]})",
                                 {"run_id": result.run_id, "balanced_accuracy": result.balanced_accuracy}))


def _published_tasks() -> set[str]:
    from tfp_mlflow.reference import Reference, bundled_reference

    return set(Reference.load(bundled_reference()).tasks)


def _open_name(entry: SeedEntry) -> str:
    """The task name of a plan entry with its data open (its own name, else its source's)."""
    name = entry.task or _task_name(entry.source, open_data=True)
    if name is None:   # open data always names a library source
        raise RuntimeError(f"no task name for {entry.source!r} with its data open")
    return name


def _task_name(source: str, *, open_data: bool) -> str | None:
    """The task name a source gets (its cached manifest's name for a library dataset)."""
    from tfp_mlflow.extract.sources import is_library_source, resolve_source

    if is_library_source(source):
        return Path(resolve_source(source)).stem if open_data else None
    path = Path(source)
    return validate_task_name(path.stem if path.suffix.lower() == ".csv" else path.name)


def _fingerprint_and_contribute(cloud: KnowledgeStore, entry: SeedEntry, name: str, *, samples: int, device: str | None,
                                published: bool, progress: bool) -> str:
    from tfp_mlflow.extract import Draws, fingerprint_dataset
    from tfp_mlflow.spec import default_spec

    spec = cloud.spec() or default_spec()
    note = ""
    if published and cloud.task(name) is None:
        from tfp_mlflow.reference import Reference, bundled_reference
        from tfp_mlflow.reference_import import import_reference

        import_reference(cloud, Reference.load(bundled_reference()))
        note = "imported the published study; "
    fingerprint = fingerprint_dataset(entry.source, spec=spec, name=name, keywords=entry.keywords, progress=progress,
                                      draws=Draws(samples=samples, device=device))
    # A published task keeps its published fields where the plan gives none (contribute keeps them).
    cloud.contribute(fingerprint, name=name, domain=entry.domain or None, keywords=entry.keywords or None,
                     data_uri=entry.source, shareable=True, spec=spec)
    return note + (f"attached to the published task {name}" if published else f"contributed {name}") + \
        f" ({fingerprint.num_images:,} images, {fingerprint.num_draws:,} draws)"


def _train(cloud: KnowledgeStore, entry: SeedEntry, name: str, training: SeedTraining, *, scenario: str = "baseline",
           source: str = "", source_data: str | None = None):
    from tfp_mlflow.train import TrainConfig, train

    config = TrainConfig(target=entry.source, name=name, scenario=scenario, source=source, source_data=source_data,
                         epochs=training.epochs, image_size=training.image_size, shrink=training.shrink,
                         device=training.device, provenance=_provenance(entry))
    return train(config, cloud=cloud, contribute=True, progress=training.progress, log_model=False)


def _tune(cloud: KnowledgeStore, entry: SeedEntry, name: str, trials: int, training: SeedTraining):
    """A short study warm-started from the cloud, with the fingerprint already in it (no second extraction)."""
    from tfp_mlflow.recommend import QueryOptions
    from tfp_mlflow.train import TrainConfig
    from tfp_mlflow.tune import StudyPlan
    from tfp_mlflow.workflows.tuning import tune_for

    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / f"{name}.npz"
        task = cloud.task(name)
        if task is None:
            raise BadInputError(f"task {name!r} is not in the cloud: fingerprint it first (`tfp seed` does)")
        cloud.fingerprint(task).save(target)
        return tune_for(entry.source, cloud, fingerprint=target, keywords=entry.keywords, epochs=training.epochs,
                        query=QueryOptions(trusted=training.trusted),
                        training=TrainConfig(target=entry.source, name=name, image_size=training.image_size,
                                             shrink=training.shrink, device=training.device),
                        study=StudyPlan(name=f"seed-{name}", n_trials=trials))


def _provenance(entry: SeedEntry) -> dict[str, str]:
    return {"seeded_from": entry.source, "licence": entry.licence or "see the source", "measured_by": "tfp seed"}


def _local(source: str) -> str:
    """The local folder or manifest of a plan's source (a library dataset's cached copy)."""
    from tfp_mlflow.extract.sources import is_library_source, resolve_source

    return str(resolve_source(source)) if is_library_source(source) else source
