"""`tfp demo`: the whole loop on the embedded default, with synthetic tasks and no internet.

1. draw the source tasks and fingerprint them with the shipped spec; contribute them as shareable data;
2. import the published 71-task knowledge (its policies are the demo's candidate policies);
3. measure each source's knowledge with a short study of its own (nothing invented);
4. a held-out task plays the new user's dataset: fingerprint, ``recommend``, a warm-started ``tune``;
5. the final trainings on it: the no-transfer baseline, the tuned configuration, co-training with the closest
   shareable source, each with several seeds on all of the user's data, scored on fresh test images of the same
   task that no study saw; a summary table with each gain's standard error, ``summary.json`` and everything
   browsable in ``mlflow ui``.

Running it again on the same folder reuses what is there (contributions and studies are idempotent).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from tfp_mlflow.demo.cloud import (
    DEFAULT_PLAN,
    DemoPlan,
    contribute_task,
    demo_space,
    final_manifest,
    held_out_task,
    measure_knowledge,
    source_tasks,
)
from tfp_mlflow.errors import TfpError
from tfp_mlflow.noise import Z, at_chance, standard_error
from tfp_mlflow.recommendation import Recommendation

__all__ = ["DemoResult", "run_demo", "compare", "DEMO_SCHEMA"]

DEMO_SCHEMA = "tfp.demo/1"


@dataclass
class DemoResult:
    """What the demo did and measured; :meth:`to_json` is ``summary.json``."""

    home: str
    tracking_uri: str
    seed: int
    target: str
    target_family: str
    sources: list[str]
    recommendation_run: str
    recommended: list[dict[str, Any]]
    study: dict[str, Any]
    results: list[dict[str, Any]]
    seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"schema": DEMO_SCHEMA, **asdict(self)}


def run_demo(home: str | Path = "tfp-demo", *, plan: DemoPlan = DEFAULT_PLAN, seed: int = 0,
             console: Console | None = None, storage: str | None = None) -> DemoResult:
    """Run the demo under ``home`` (the module doc; studies in ``home/optuna.db``, or with ``storage="mlflow"`` in
    its cloud itself); returns its result and writes ``summary.json``."""
    from tfp_mlflow.cloud.store import Cloud
    from tfp_mlflow.extract import load_backbone
    from tfp_mlflow.progress import Progress
    from tfp_mlflow.recommend import recommend
    from tfp_mlflow.reference import Reference, bundled_reference
    from tfp_mlflow.reference_import import REFERENCE_CONTRIBUTOR, import_reference

    console = console or Console(stderr=True)
    started = time.perf_counter()
    (home := Path(home).resolve()).mkdir(parents=True, exist_ok=True)
    cloud = Cloud(f"sqlite:///{home / 'mlflow.db'}")
    storage = storage or f"sqlite:///{home / 'optuna.db'}"
    steps: dict[str, float] = {}
    clock = [time.perf_counter()]

    def step(name: str) -> None:
        steps[name] = round(time.perf_counter() - clock[0], 1)
        clock[0] = time.perf_counter()

    sources = source_tasks(plan, seed)
    target = held_out_task(plan.families[seed % len(plan.families)], plan, seed)
    console.rule(f"tfp demo in {home}")
    console.print(_expected(plan, home))
    console.print(f"[bold]1/5[/] {len(sources)} source tasks in {len(plan.families)} domain families, and "
                  f"{target.name} held out as the new user's dataset")
    backbone = load_backbone("tf_efficientnet_lite0", device="cpu")
    paths = {}
    with Progress(console=console, transient=True) as bar:
        job = bar.add_task("drawing, fingerprinting and contributing", total=len(sources))
        for task in sources:
            paths[task.name], _ = contribute_task(cloud, task, home / "tasks", backbone, plan, seed)
            bar.advance(job)
    step("fingerprint and contribute sources")

    console.print("[bold]2/5[/] importing the published 71-task knowledge (Godau et al.; MIT licence)")
    study = Reference.load(bundled_reference())
    if sum(t.contributor == REFERENCE_CONTRIBUTOR for t in cloud.tasks()) < len(study.tasks):
        with Progress(console=console, transient=True) as bar:
            job = bar.add_task("importing", total=len(study.tasks))
            import_reference(cloud, study, on_task=lambda _: bar.advance(job))
    step("import reference")

    space = demo_space(cloud, plan, seed)
    console.print(f"[bold]3/5[/] measuring each source's knowledge: {plan.knowledge_trials} trials over "
                  f"{', '.join(space.architectures)} and policies {', '.join(space.policies)}")
    with Progress(console=console, transient=True) as bar:
        job = bar.add_task("training", total=len(sources) * plan.knowledge_trials)
        for task in sources:
            measure_knowledge(cloud, task, paths[task.name], space, plan, storage, seed,
                              on_trial=lambda _: bar.advance(job))
    step("measure source knowledge")

    console.print(f"[bold]4/5[/] {target.name}: fingerprint, recommend, warm-started tune "
                  f"({plan.tune_trials} trials)")
    target_path, fingerprint = contribute_task(cloud, target, home / "tasks", backbone, plan, seed,
                                               contribute=False)
    recommendation, tuned, cold = _recommend_and_tune(cloud, target, target_path, fingerprint, space, plan,
                                                      (home, storage), seed, console)
    # Co-training needs a source whose images are here: the first such suggestion, however far down the list.
    deeper = recommend(cloud, fingerprint, name=target.name, top_k=100, scenarios=["cotraining"], log=False)
    step("recommend and tune")

    console.print(f"[bold]5/5[/] final trainings on {target.name} ({plan.final_epochs} epochs, "
                  f"{plan.final_seeds} seed{'s' * (plan.final_seeds > 1)} each; {plan.test_images} test images)")
    results = _final_trainings(cloud, target, target_path, plan, seed, (tuned, cold), deeper, console)
    step("final trainings")

    result = DemoResult(home=str(home), tracking_uri=cloud.uri, seed=seed, target=target.name,
                        target_family=target.family, sources=[t.name for t in sources],
                        recommendation_run=recommendation.run_id, recommended=_recommended(recommendation),
                        study={"name": tuned.study_name, "storage": storage, "parent_run": tuned.parent_run_id,
                               "best_params": tuned.best_params, "best_value": tuned.best_value,
                               "trials": len(tuned.trials), "warm_started": len(tuned.warm_started)},
                        results=results, seconds=round(time.perf_counter() - started, 1), steps=steps)
    (home / "summary.json").write_text(json.dumps(result.to_json(), indent=1, default=str))
    return result


def _recommend_and_tune(cloud, target, path: Path, fingerprint, space, plan: DemoPlan, where: tuple[Path, str],
                        seed: int, console: Console):
    """The new task's recommendation (kept as ``recommendation.json``), its warm-started study, and a cold study of
    the same budget that tells tuning from transfer."""
    from tfp_mlflow.recommend import recommend

    home, storage = where
    recommendation = recommend(cloud, fingerprint, name=target.name, top_k=3)
    (home / "recommendation.json").write_text(json.dumps(recommendation.to_json(), indent=1, sort_keys=True))
    tuned = _tune(cloud, target, path, space, plan, storage, recommendation, seed, console)
    console.print(f"    and a cold study of the same budget ({plan.tune_trials} trials, TPE alone), to tell tuning "
                  f"from transfer")
    return recommendation, tuned, _tune(cloud, target, path, space, plan, storage, None, seed, console)


def _expected(plan: DemoPlan, home: Path) -> str:
    """How long the demo will take here: its 2-core figure, scaled by the share of the cores this process gets
    when other work keeps them busy (torch's threads are set to the cores that are free)."""
    import torch

    from tfp_mlflow._threads import free_cores

    cores, free = os.cpu_count() or 1, free_cores()
    torch.set_num_threads(free)
    minutes = plan.expected_minutes * 2 / min(free, 2)   # the figure is for 2 free cores
    busy = (f"; {cores - free} of {cores} cores busy with other work: {free} thread{'s' * (free > 1)} used"
            if free < cores else "")
    return (f"expected: about {minutes:.0f} minutes here ({plan.expected_minutes:.0f} on 2 free CPU cores{busy}; "
            f"less on a GPU, or where {home.name} already holds a run)")


def _tune(cloud, target, path: Path, space, plan: DemoPlan, storage: str, recommendation: Recommendation | None,
          seed: int, console: Console):
    """The warm-started study (``recommendation``), or without one a cold study of the same budget."""
    from tfp_mlflow.train import TrainConfig
    from tfp_mlflow.tune import StudyPlan, run_study

    base = TrainConfig(target=str(path), name=target.name, image_size=plan.image_size, batch_size=16, seed=seed)
    study = StudyPlan(f"demo-{target.name}-{seed}" + ("" if recommendation else "-cold"), storage,
                      n_trials=plan.tune_trials, top_k=min(3, plan.tune_trials), seed=seed,
                      widen=True, contribute=recommendation is not None)   # the space grows to what is suggested
    return run_study(base, cloud, space, study, recommendation=recommendation,
                     on_trial=lambda t: console.print(
                         f"    trial {t.number}: {t.state.name.lower()} "
                         f"{'' if t.value is None else f'{t.value:.3f}'} {t.params['architecture']}, policy "
                         f"{t.params['policy']}, lr {t.params['lr']:.2g}"
                         + (f" (warm start, rank {t.user_attrs.get('rank', '?')})"
                            if t.user_attrs.get('warm_start') else '')))


def _final_trainings(cloud, target, path: Path, plan: DemoPlan, seed: int, studies, recommendation: Recommendation,
                     console: Console) -> list[dict[str, Any]]:
    """Baseline, the warm-started and the cold study's best configurations and co-training with the closest
    shareable source, each trained with ``plan.final_seeds`` seeds on all of the user's data and scored on a test
    split no study has seen."""
    from tfp_mlflow.train import TrainConfig, config_from_recommendation, train
    from tfp_mlflow.tune.study import cloud_policies, config_from_params

    manifest = final_manifest(target, path, plan, path.parent)
    base = TrainConfig(target=str(manifest), name=target.name, image_size=plan.image_size, batch_size=16, seed=seed,
                       epochs=plan.final_epochs)
    configs = [("no-transfer baseline", "tf_efficientnet_lite0, no policy, lr 1e-3", base)]
    for label, tuned in zip(("tuned (warm-started study)", "tuned (cold study, same budget)"), studies):
        if tuned.best_params:
            p = tuned.best_params
            configs.append((label, f"{p['architecture']}, policy {p['policy']}, lr {p['lr']:.2g}",
                            config_from_params(base, p, cloud, cloud_policies(cloud),
                                               provenance={"study": tuned.study_name})))
    # The closest source whose data is here (a published study's source names a dataset to download instead).
    try:
        rank = next((n for n, i in enumerate(recommendation.suggestions("cotraining"), 1) if i.data_uri), 1)
        cotrain = config_from_recommendation(recommendation, "cotraining", rank, base, cloud)
        configs.append((f"co-training with {cotrain.source}",
                        f"the first suggestion with data here (number {rank})",
                        cotrain))
    except TfpError as exc:
        console.print(f"    no co-training: {exc}")
    seeds = [seed + offset for offset in range(plan.final_seeds)]
    out = []
    for label, what, config in configs:
        runs = []
        for number, each in enumerate(seeds):
            result = train(replace(config, seed=each), cloud=cloud, progress=False, contribute="cold" not in label,
                           log_model=label.startswith("tuned (warm") and number == 0)
            console.print(f"    {label}, seed {each}: balanced accuracy {result.balanced_accuracy:.3f} "
                          f"(run {result.run_id})")
            runs.append(result)
        out.append({"configuration": label, "what": what, "scenario": config.scenario, "source": config.source,
                    "seeds": seeds, "run_id": runs[0].run_id, "run_ids": [r.run_id for r in runs],
                    "per_seed": [r.balanced_accuracy for r in runs],
                    "auroc": None if any(r.auroc is None for r in runs) else float(np.mean([r.auroc for r in runs]))})
    return compare(out, held_out=plan.test_images, num_classes=target.num_classes)


def compare(rows: list[dict[str, Any]], *, held_out: int, num_classes: int) -> list[dict[str, Any]]:
    """Each configuration's mean balanced accuracy over seeds, its spread, and its gain over the baseline (the
    first row) with a standard error that adds the seeds' spread of the paired gains to the test split's own noise
    (:mod:`tfp_mlflow.noise`); a gain under twice that error is ``within_noise``, a mean that guessing reaches on
    the test split is ``at_chance``."""
    baseline = np.asarray(rows[0]["per_seed"], dtype=float)
    out = []
    for row in rows:
        scores = np.asarray(row["per_seed"], dtype=float)
        mean, gains = float(scores.mean()), scores - baseline
        spread = float(gains.std(ddof=1) / np.sqrt(len(gains))) if len(gains) > 1 else 0.0
        split = math.hypot(standard_error(mean, held_out) or 0.0,
                           standard_error(float(baseline.mean()), held_out) or 0.0)
        error = math.hypot(spread, split) if row is not rows[0] else 0.0
        out.append({**row, "balanced_accuracy": mean, "held_out": held_out,
                    "sd": float(scores.std(ddof=1)) if len(scores) > 1 else None,
                    "gain": float(gains.mean()), "gain_se": error,
                    "within_noise": bool(abs(gains.mean()) < Z * error) if row is not rows[0] else None,
                    "at_chance": at_chance(mean, "balanced_accuracy", num_classes, held_out)})
    return out


def _recommended(recommendation) -> list[dict[str, Any]]:
    """Per closest task: its distance and what each scenario took from it."""
    rows = []
    for entry in recommendation.ranking[:recommendation.top_k]:
        row = {"rank": entry.rank, "source": entry.source, "domain": entry.domain, "distance": entry.distance,
               "gave": []}
        for advice in recommendation.scenarios.values():
            for item in advice.items:
                if item.source == entry.source:
                    row["gave"].append(item.what.removeprefix("tf_efficientnet_"))
        row["gave"] = list(dict.fromkeys(row["gave"]))
        rows.append(row)
    return rows
