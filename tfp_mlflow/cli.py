"""The ``tfp`` command line: one click group; each command is a thin wrapper over the Python API.

Expected failures (:class:`~tfp_mlflow.errors.TfpError`) print one line and exit with 2 (bad input) or 1;
``tfp --debug ...`` shows the traceback instead.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Sequence

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from tfp_mlflow._version import __version__
from tfp_mlflow.errors import BadInputError, TfpError

console = Console(soft_wrap=True)
err_console = Console(stderr=True)


class _Group(click.Group):
    """Turns TfpError into one line on stderr and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TfpError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="tfp")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Task fingerprinting on an MLflow knowledge cloud."""
    ctx.obj = {"debug": debug}


TRACKING_URI = click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI",
                            help="The cloud: sqlite:///PATH or http://HOST:PORT (default: ./tfp-cloud/mlflow.db).")


@main.command("selectors")
def selectors_command() -> None:
    """List the registered task selectors."""
    from tfp_mlflow.selectors import describe_selector, get_selector, list_selectors

    table = Table(title="task selectors (lower distance = closer source)")
    table.add_column("name", style="bold")
    table.add_column("needs")
    table.add_column("description")
    for name in list_selectors():
        needs = "fingerprint" if get_selector(name).needs_fingerprint else "keywords"
        table.add_row(name, needs, describe_selector(name))
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
@click.option("--selector", "selector_name", default="bkld-small-target", show_default=True,
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
    from tfp_mlflow.selectors import get_selector

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
            table.add_row(str(entry.rank), entry.name, f"{entry.distance:.6g}", f"{entry.num_samples:,}")
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
    import csv
    import os
    import tempfile

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
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
@click.option("--name", default=None, help="Task name (default: the folder or manifest name).")
@click.option("--keywords", default="", help="Comma-separated keywords (modality, anatomy, entities).")
@click.option("--split", default="train", show_default=True, help="Manifest split to use.")
@click.option("--shard", default=None, help="i/N: compute the i-th of N parts (combine with `tfp merge`).")
@click.option("--moments", is_flag=True, help="Also keep second moments (for the fid selector).")
@click.option("--skip-unreadable", is_flag=True, help="Skip images that cannot be decoded and report them.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Also draw the fingerprint.")
def fingerprint_command(data: str, out_path: str, spec_path: str | None, samples: int | None, seed: int,
                        backbone: str | None, weights: str | None, batch_size: int, workers: int | None,
                        device: str | None, name: str | None, keywords: str, split: str, shard: str | None,
                        moments: bool, skip_unreadable: bool, plot_path: str | None) -> None:
    """Fingerprint a dataset: a folder of class folders or a CSV manifest (path,label[,split])."""
    from tfp_mlflow.extract import fingerprint_dataset
    from tfp_mlflow.fingerprint import validate_keywords
    from tfp_mlflow.spec import FingerprintSpec, default_spec

    spec = FingerprintSpec.load(spec_path) if spec_path else default_spec()
    if backbone and backbone != spec.backbone:
        raise BadInputError(f"--backbone {backbone} differs from the spec's {spec.backbone}; create a spec for it "
                            f"with `tfp spec create --backbone {backbone}` and pass --spec")
    if batch_size < 1:
        raise BadInputError("--batch-size must be at least 1")
    fp = fingerprint_dataset(data, spec=spec, weights=weights, samples=samples, seed=seed, batch_size=batch_size,
                             workers=workers, device=device, name=name, keywords=validate_keywords(keywords or []),
                             shard=shard, skip_unreadable=skip_unreadable, moments=moments, split=split)
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
    from tfp_mlflow.fingerprint import Fingerprint, merge

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


@main.command("contribute")
@click.argument("fingerprint", required=False, type=click.Path(dir_okay=False))
@click.option("--name", default=None, help="Task name (default: the fingerprint's).")
@click.option("--keywords", default=None, help="Comma-separated keywords (default: the fingerprint's).")
@click.option("--domain", default=None, help="Imaging domain, e.g. fundus_photography.")
@click.option("--data-uri", default=None, help="Where the task's data lives (for --shareable).")
@click.option("--shareable", is_flag=True, default=None, help="Others may use the data for pretraining/co-training.")
@click.option("--results", "results_path", type=click.Path(dir_okay=False),
              help="CSV/JSON of results (kind,architecture,source,policy_id,repetition,balanced_accuracy,auroc,run_id).")
@click.option("--policy", "policy_paths", multiple=True, type=click.Path(dir_okay=False),
              help="albumentations policy JSON learned on this task (repeatable).")
@click.option("--spec", "spec_path", type=click.Path(dir_okay=False), help="Spec of the fingerprint (sets a new "
              "cloud's spec; default: the shipped spec).")
@TRACKING_URI
def contribute_command(fingerprint: str | None, name: str | None, keywords: str | None, domain: str | None,
                       data_uri: str | None, shareable: bool | None, results_path: str | None,
                       policy_paths: tuple[str, ...], spec_path: str | None, tracking_uri: str | None) -> None:
    """Add a task (its fingerprint and what was learned on it) to the cloud; re-contributing updates it."""
    from pathlib import Path as _Path

    from tfp_mlflow.cloud import Cloud, Knowledge, KnowledgeKind, KnowledgeRow
    from tfp_mlflow.cloud.results import read_results
    from tfp_mlflow.fingerprint import Fingerprint, validate_task_name
    from tfp_mlflow.policies import read_policy
    from tfp_mlflow.spec import FingerprintSpec

    fp = Fingerprint.load(fingerprint) if fingerprint else None
    task_name = validate_task_name(name or (fp.name if fp else ""))
    knowledge = read_results(results_path, task_name) if results_path else []
    if policy_paths:
        policies = {_Path(p).stem: read_policy(p) for p in policy_paths}
        knowledge.append(Knowledge(task=task_name, kind=KnowledgeKind.POLICY,
                                   rows=tuple(KnowledgeRow(policy_id=pid) for pid in sorted(policies)),
                                   policies=policies))
    spec = FingerprintSpec.load(spec_path) if spec_path else None
    cloud = Cloud(tracking_uri)
    task = cloud.contribute(fp, name=task_name, keywords=keywords.split(",") if keywords is not None else None,
                            domain=domain, data_uri=data_uri, shareable=shareable, knowledge=knowledge, spec=spec)
    console.print(f"contributed {task.name} to {cloud.uri} (run {task.run_id}; fingerprint "
                  f"{'yes' if task.has_fingerprint else 'no'}; {len(knowledge)} knowledge entries)")


@main.command("recommend")
@click.argument("data", required=False, type=click.Path())
@click.option("--top-k", type=int, default=3, show_default=True)
@click.option("--selector", "selector_name", default="bkld-small-target", show_default=True)
@click.option("--scenario", type=click.Choice(["all", "architecture", "augmentation", "pretraining", "cotraining"]),
              default="all", show_default=True)
@click.option("--keywords", default="", help="The new task's keywords (needed by --selector manual).")
@click.option("--metric", type=click.Choice(["balanced_accuracy", "auroc"]), default="balanced_accuracy",
              show_default=True, help="Base metric that picks a source's best architecture.")
@click.option("--json", "json_out", is_flag=False, flag_value="-", default=None,
              help="Print the stable JSON (or write it to a file: --json=OUT.json).")
@click.option("--samples", type=int, default=None, help="Draws when DATA is a dataset (default: the spec's).")
@click.option("--no-log", is_flag=True, help="Do not log the recommendation as an MLflow run.")
@TRACKING_URI
def recommend_command(data: str | None, top_k: int, selector_name: str, scenario: str, keywords: str, metric: str,
                      json_out: str | None, samples: int | None, no_log: bool, tracking_uri: str | None) -> None:
    """Recommend architectures, policies and source data for a new task (a fingerprint file or a dataset)."""
    import json as _json
    from pathlib import Path as _Path

    from tfp_mlflow.cloud import SCENARIOS, Cloud
    from tfp_mlflow.fingerprint import Fingerprint, validate_keywords
    from tfp_mlflow.recommend import recommend

    cloud = Cloud(tracking_uri)
    target = None
    if data:
        if _Path(data).suffix == ".npz" and _Path(data).is_file():
            target = Fingerprint.load(data)
        else:
            from tfp_mlflow.extract import fingerprint_dataset

            target = fingerprint_dataset(data, spec=cloud.spec(), samples=samples, progress=json_out != "-")
    result = recommend(cloud, target, keywords=validate_keywords(keywords or []), selector=selector_name,
                       top_k=top_k, scenarios=SCENARIOS if scenario == "all" else (scenario,), metric=metric,
                       log=not no_log)
    payload = _json.dumps(result.to_json(), indent=1, sort_keys=True)
    if json_out == "-":
        click.echo(payload)
        return
    if json_out:
        _Path(json_out).write_text(payload)
    _print_recommendation(result)


def _print_recommendation(result) -> None:
    ranking = Table(title=f"closest tasks to {result.target['name']} by {result.selector} (lower is closer)")
    for column in ("rank", "source", "distance", "images", "domain", "shareable"):
        ranking.add_column(column)
    for row in result.ranking[:max(5, result.top_k)]:
        ranking.add_row(str(row["rank"]), row["source"], f"{row['distance']:.4g}", f"{row['num_samples']:,}",
                        row["domain"] or "-", "yes" if row["shareable"] else "no")
    console.print(ranking)
    for scenario, block in result.scenarios.items():
        table = Table(title=f"{scenario}: top {result.top_k} by {block['selector']}")
        table.add_column("rank")
        table.add_column("source")
        table.add_column("recommendation")
        table.add_column("evidence")
        for item in block["items"]:
            if scenario == "architecture":
                what = item["architecture"] or "(not published)"
                evidence = (f"{result.metric} {item[result.metric]:.3f}" if item[result.metric] is not None else "")
            elif scenario == "augmentation":
                what, evidence = item["policy_id"], f"run {item['evidence']['knowledge_run'][:8]}"
            else:
                what, evidence = item["data_uri"], f"{item['num_images']:,} images"
            table.add_row(str(item["rank"]), item["source"], what, evidence)
        console.print(table)
        for note in block["notes"]:
            console.print(f"  note: {note}")
    for note in result.notes:
        console.print(f"note: {note}")
    if result.run_id:
        console.print(f"logged as run {result.run_id} in experiment tfp-recommendations of {result.cloud}")


@main.command("import-reference")
@click.argument("reference_dir", required=False, type=click.Path(file_okay=False))
@TRACKING_URI
def import_reference_command(reference_dir: str, tracking_uri: str | None) -> None:
    """Load the published 71-task study (tasks, outcomes, policies) into the cloud; importing twice changes nothing.

    REFERENCE_DIR defaults to the copy shipped with tfp-mlflow.
    """
    from rich.progress import Progress

    from tfp_mlflow.cloud import Cloud
    from tfp_mlflow.cloud.reference_import import import_reference
    from tfp_mlflow.reference import ReferenceStudy, bundled_reference

    study = ReferenceStudy.load(reference_dir or bundled_reference())
    cloud = Cloud(tracking_uri)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("importing reference tasks", total=len(study.tasks))
        counts = import_reference(cloud, study, on_task=lambda _: bar.advance(task))
    console.print(f"imported {len(study.tasks)} reference tasks into {cloud.uri}: {counts['tasks']} written, "
                  f"{counts['tasks_unchanged']} unchanged, {counts['knowledge']} knowledge entries checked "
                  f"(no fingerprints: rank them with --selector manual, or attach one with `tfp contribute`)")


@main.command("evaluate")
@click.option("--reference", "reference_dir", type=click.Path(file_okay=False),
              help="Folder laid out like shared/reference/tfp-paper/ (default: the copy shipped with tfp-mlflow).")
@click.option("--selector", "selector_files", multiple=True, metavar="NAME=PATH.csv",
              help="A selector's distance matrix (rows sources, columns targets); repeatable.")
@click.option("--builtin", "builtins", multiple=True, type=click.Choice(["manual"]),
              help="Add our own selector computed from the reference's task descriptions.")
@click.option("--top-k", type=int, default=3, show_default=True, help="Shots averaged by the meta metrics.")
@click.option("--bootstraps", type=int, default=1000, show_default=True, help="Bootstraps of the rank analysis.")
@click.option("--json", "json_out", is_flag=False, flag_value="-", default=None,
              help="Print the stable JSON (or write it to a file: --json=OUT.json).")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False), help="Write the figures to this folder.")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None,
              help="Also log the evaluation as an MLflow run (tfp-evaluations) on this server.")
def evaluate_command(reference_dir: str, selector_files: tuple[str, ...], builtins: tuple[str, ...], top_k: int,
                     bootstraps: int, json_out: str | None, plots_dir: str | None, tracking_uri: str | None) -> None:
    """Score task selectors against the reference study's transfer outcomes (win rates, gain curves)."""
    import json as _json
    from pathlib import Path as _Path

    from tfp_mlflow.evaluation import evaluate
    from tfp_mlflow.reference import ReferenceStudy, bundled_reference, read_distance_matrix

    reference_dir = reference_dir or str(bundled_reference())
    study = ReferenceStudy.load(reference_dir)
    matrices = {}
    for entry in selector_files:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise BadInputError(f"--selector takes NAME=PATH.csv, got {entry!r}")
        matrices[name] = read_distance_matrix(path)
    for name in builtins:
        matrices[name] = study.manual_matrix()
    with console.status("scoring selectors on the validation targets", spinner="dots") if json_out != "-" \
            else contextlib.nullcontext():
        result = evaluate(study, matrices, top_k_shots=top_k, bootstraps=bootstraps)
    payload = result.to_json()
    if plots_dir:
        result.write_plots(plots_dir)
    if tracking_uri:
        from tfp_mlflow.cloud import Cloud

        payload["run_id"] = result.log(Cloud(tracking_uri), reference=str(_Path(reference_dir).resolve()))
    text = _json.dumps(payload, indent=1, sort_keys=True)
    if json_out == "-":
        click.echo(text)
        return
    if json_out:
        _Path(json_out).write_text(text)
    _print_evaluation(payload)


def _print_evaluation(payload: dict) -> None:
    scenarios = payload["scenarios"]
    gains = Table(title="targets improved in balanced accuracy by the best of the top k (%, Fig. 4 top)")
    gains.add_column("selector")
    gains.add_column("scenario")
    for k in range(1, 6):
        gains.add_column(f"k={k}", justify="right")
    for selector, curves in payload["gain_curve"].items():
        for scenario in scenarios:
            gains.add_row(selector, scenario, *(f"{v:.2f}" for v in curves[scenario]))
    console.print(gains)
    wins = Table(title=f"win rates (%, {payload['win_rate_setups_per_scenario']} setups per scenario, "
                       f"top-{payload['top_k']} averaged; ties count for every tied selector)")
    wins.add_column("selector")
    for scenario in [*scenarios, "mean"]:
        wins.add_column(scenario, justify="right")
    for selector, rates in payload["win_rates"].items():
        wins.add_row(selector, *(f"{rates[s]:.2f}" for s in [*scenarios, "mean"]))
    console.print(wins)
    if payload.get("run_id"):
        console.print(f"logged as run {payload['run_id']} in experiment tfp-evaluations")


if __name__ == "__main__":  # pragma: no cover
    main()
