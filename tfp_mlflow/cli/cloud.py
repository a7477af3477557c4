"""Commands on the knowledge cloud: contribute, recommend, keywords, import-reference, seed."""
from __future__ import annotations

from pathlib import Path as _Path

import click
from rich.table import Table

from tfp_mlflow.cli import (
    DATA_ROOT,
    JSON_OUT,
    TRACKING_URI,
    console,
    data_source,
    emit_json,
    main,
    print_note,
)
from tfp_mlflow.cloud.schema import BASE_METRICS, Metric
from tfp_mlflow.ranking import DEFAULT_MERGE_RULE, MERGE_RULES
from tfp_mlflow.scenarios import ITEM_ARCHITECTURE, ITEM_POLICY, scenario_names
from tfp_mlflow.selectors import DEFAULT_SELECTOR


@main.command("contribute")
@click.argument("fingerprint", required=False, type=click.Path(dir_okay=False))
@click.option("--name", default=None, help="Task name (default: the fingerprint's).")
@click.option("--keywords", default=None, help="Comma-separated keywords (default: the fingerprint's).")
@click.option("--domain", default=None, help="Imaging domain, e.g. fundus_photography.")
@click.option("--data-uri", default=None, help="Where the task's data lives (for --shareable).")
@click.option("--shareable", is_flag=True, default=None, help="Others may use the data for pretraining/co-training.")
@click.option("--results", "results_path", type=click.Path(dir_okay=False),
              help="CSV/JSON of results "
                   "(kind,architecture,source,policy_id,repetition,balanced_accuracy,auroc,run_id).")
@click.option("--policy", "policy_paths", multiple=True, type=click.Path(dir_okay=False),
              help="albumentations policy JSON learned on this task (repeatable).")
@click.option("--spec", "spec_path", type=click.Path(dir_okay=False), help="Spec of the fingerprint (sets a new "
              "cloud's spec; default: the shipped spec).")
@click.option("--measured-by", default=None, metavar="ACCOUNTS",
              help="Other accounts whose transfer outcomes and baselines on this task readers count (comma-separated; "
                   "by default only yours count).")
@TRACKING_URI
def contribute_command(fingerprint: str | None, name: str | None, keywords: str | None, domain: str | None,
                       data_uri: str | None, shareable: bool | None, results_path: str | None,
                       policy_paths: tuple[str, ...], spec_path: str | None, measured_by: str | None,
                       tracking_uri: str | None) -> None:
    """Add a task (its fingerprint and what was learned on it) to the cloud; re-contributing updates it."""

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
                            domain=domain, data_uri=data_uri, shareable=shareable, knowledge=knowledge, spec=spec,
                            measured_by=measured_by.split(",") if measured_by is not None else None)
    console.print(f"contributed {task.name} to {cloud.uri} (run {task.run_id}; fingerprint "
                  f"{'yes' if task.has_fingerprint else 'no'}; {len(knowledge)} knowledge entries)")


@main.command("recommend")
@click.argument("data", required=False, type=click.Path())
@click.option("--top-k", type=int, default=3, show_default=True)
@click.option("--selector", "selector_name", default=DEFAULT_SELECTOR, show_default=True)
@click.option("--scenario", type=click.Choice(["all", *scenario_names()]),
              default="all", show_default=True)
@click.option("--keywords", default="", help="The new task's keywords (needed by --selector manual).")
@click.option("--metric", type=click.Choice(BASE_METRICS), default=Metric.BALANCED_ACCURACY,
              show_default=True, help="Base metric that picks a source's best architecture.")
@click.option("--json", "json_out", is_flag=False, flag_value="-", default=None,
              help="Print the stable JSON (or write it to a file: --json=OUT.json).")
@click.option("--samples", type=int, default=None,
              help="Draws when DATA is a dataset (default: 1,000 on a CPU, about 40 s on 2 cores, which rank as "
                   "the spec's would almost everywhere; on a GPU the cloud spec's, 10,000 for the shipped one).")
@click.option("--no-log", is_flag=True, help="Do not log the recommendation as an MLflow run.")
@click.option("--rerank", default=None, metavar="SCORE",
              help="Re-order the architecture suggestions by a transferability score (logme, leep, ...) computed "
                   "on DATA's labelled images (DATA must be a dataset).")
@click.option("--server", default=None, metavar="URL",
              help="Rank on this `mlflow server --app-name tfp` (one upload, no fingerprint downloads); falls back "
                   "to ranking here when the server has no tfp app. An http(s) --tracking-uri is used so by "
                   "default.")
@click.option("--local", is_flag=True, help="Rank here even when the cloud is a tracking server (reads its tasks).")
@click.option("--trusted", default=None, metavar="PATTERNS",
              help="Use only tasks and knowledge of these contributors (comma-separated fnmatch patterns, e.g. "
                   "'alice,bob,reference:*').")
@click.option("--merge", default=DEFAULT_MERGE_RULE, show_default=True, type=click.Choice([*MERGE_RULES, "none"]),
              help="On a cloud of fingerprinted and keyword-only tasks, how the keyword ranking (manual, needs "
                   "--keywords) joins the fingerprint ranking; none leaves keyword-only tasks out.")
@click.option("--include-flagged", is_flag=True,
              help="Also use sources and results the poisoning guard flagged (they stay marked).")
@click.option("--order", "order_by", type=click.Choice(["auto", "distance"]), default="auto", show_default=True,
              help="auto: per scenario, the sources' measured track record orders the suggestions where it beat "
                   "distance on the cloud's other targets; distance: distance alone. Reasons are shown either way.")
@TRACKING_URI
@data_source
def recommend_command(data: str | None, top_k: int, selector_name: str, scenario: str, keywords: str, metric: str,
                      json_out: str | None, samples: int | None, no_log: bool, rerank: str | None,
                      server: str | None, local: bool, trusted: str | None, include_flagged: bool, merge: str,
                      order_by: str, tracking_uri: str | None) -> None:
    """Recommend architectures, policies and source data for a new task (a fingerprint file or a dataset)."""
    from tfp_mlflow.recommend import QueryOptions
    from tfp_mlflow.workflows import recommend_for

    query = QueryOptions(selector=selector_name, top_k=top_k, scenarios=None if scenario == "all" else (scenario,),
                         metric=metric, trusted=trusted, include_flagged=include_flagged,
                         merge=None if merge == "none" else merge, order_by=order_by)
    result = recommend_for(data, tracking_uri, query=query, keywords=keywords or "", samples=samples, rerank=rerank,
                           server=server, local=local, log=not no_log, progress=json_out != "-",
                           on_note=print_note,
                           saved_as=json_out if json_out not in (None, "-") else None)
    if emit_json(result.to_json(), json_out, sort_keys=True):
        return
    _print_recommendation(result)


def _why(reasons: dict) -> str:
    """A suggestion's reasons in one cell: how close, and how large and how sure its measured gain was."""
    parts = []
    if "distance_rank" in reasons:
        parts.append(f"#{reasons['distance_rank']}")
    record = reasons.get("track_record")
    if record and record["tried"]:
        parts.append("all: " + _effect(record))
        near = reasons.get("near_record")
        if near and near.get("among"):
            parts.append(f"{near['among']} nearest: " + (_effect(near) if near["tried"] else "not tried"))
    elif record is not None:
        parts.append("no measured transfers yet")
    return "; ".join(parts)


def _effect(record: dict) -> str:
    """A record's gain in words: mean gain over the baseline with its 95 % interval, and what that amounts to."""
    gain, interval = record.get("mean_gain"), record.get("interval")
    if gain is None:
        return f"tried on {record['tried']}, no baseline to compare"
    words = {"strong": "strong gain", "gain": "a gain", "loss": "a loss", "thin": "too few to tell"}
    span = f" [{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval else ""
    noise = (f", {record['beyond_noise']} of {record['sized']} beyond noise" if record.get("sized") else "")
    accounts = record.get("accounts") or 0
    noise += f", from {accounts} accounts" if accounts > 1 else ""
    return f"{gain:+.3f}{span} on {record['tried']}{noise}: {words.get(record['evidence'], record['evidence'])}"


def _evidence(item, metric: str, ordered: str) -> str:
    """A suggestion's evidence in one cell: what it measured, the run behind it, or the data's size."""
    if item.item == ITEM_ARCHITECTURE:
        value = item.metric(metric)
        evidence = f"{metric} {value:.3f}" if value is not None else ""
        held_out = item.evidence.get("noise", {}).get("held_out")
        if value is not None and held_out:
            evidence += f" on {held_out} images"
        if item.transferability:
            score = item.transferability["value"]
            evidence += f"{'; ' if evidence else ''}{ordered} {'n/a' if score is None else f'{score:.3g}'}"
        if item.evidence.get("images"):
            evidence += f" ({item.evidence['images']} images)"
    elif item.item == ITEM_POLICY:
        evidence = f"run {str(item.evidence.get('knowledge_run', ''))[:8]}"
    else:
        evidence = f"{item.num_images or 0:,} images"
    if item.flags:
        evidence += " [red](flagged, --include-flagged)[/red]"
    return evidence


def _advice_table(result, scenario: str, advice) -> Table:
    ordered = advice.ordered_by
    table = Table(title=f"{scenario}: top {result.top_k} by {advice.selector}"
                        + ("" if ordered == "distance" else f", ordered by {ordered}"))
    for column in ("rank", "source", "recommendation", "evidence",
                   "why: #distance rank; mean gain over no transfer [95 %] on all other targets and on the "
                   "targets nearest yours", "from"):
        table.add_column(column)
    for item in advice.items:
        table.add_row(str(item.rank), item.source, item.what, _evidence(item, result.metric, ordered),
                      _why(item.reasons), item.contributor or "-")
    return table


def _print_recommendation(result) -> None:
    shown = result.ranking[:max(5, result.top_k)]
    # A merged ranking holds distances of two selectors, on scales that cannot be compared: each names its own.
    mixed = len({row.signal or result.selector for row in shown}) > 1
    ranking = Table(title=f"closest tasks to {result.target['name']} by {result.selector} (lower is closer"
                          + ("; distances of two selectors are on different scales: the rank merges them)"
                             if mixed else ")"))
    for column in ("rank", "source", "distance", "images", "domain", "shareable", "guard"):
        ranking.add_column(column)
    for row in shown:
        distance = f"{row.distance:.4g}" + (f" ({row.signal or result.selector})" if mixed else "")
        ranking.add_row(str(row.rank), row.source, distance, f"{row.num_images:,}", row.domain or "-",
                        "yes" if row.shareable else "no", "[red]FLAGGED[/red]" if row.flags else "")
    console.print(ranking)
    for scenario, advice in result.scenarios.items():
        if not advice.items:   # one line, not a table of headers
            console.print(f"{scenario}: no suggestion: none of the sources within reach holds usable {scenario} "
                          f"knowledge")
        else:
            console.print(_advice_table(result, scenario, advice))
        for note in advice.notes:
            console.print(f"  note: {note}")
    for note in result.notes:
        console.print(f"note: {note}")
    for flag in result.flagged:
        console.print(f"[red]flagged[/red] {flag['what']} of {flag['source']!r} by "
                      f"{flag['contributor'] or 'unknown'}: {flag['reason']}", markup=True, highlight=False)
    if result.run_id:
        console.print(f"logged as run {result.run_id} in experiment tfp-recommendations of {result.cloud}")
    if result.next_steps:
        console.print("next:")
        for step in result.next_steps:
            console.print(f"  {step}", highlight=False, markup=False)


@main.command("import-reference")
@click.argument("reference_dir", required=False, type=click.Path(file_okay=False))
@TRACKING_URI
def import_reference_command(reference_dir: str, tracking_uri: str | None) -> None:
    """Load the published 71-task study (tasks, outcomes, policies) into the cloud; importing twice changes nothing.

    REFERENCE_DIR defaults to the copy shipped with tfp-mlflow.
    """
    from tfp_mlflow.cloud import Cloud
    from tfp_mlflow.progress import Progress
    from tfp_mlflow.reference import Reference, bundled_reference
    from tfp_mlflow.reference_import import import_reference

    study = Reference.load(reference_dir or bundled_reference())
    cloud = Cloud(tracking_uri)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("importing reference tasks", total=len(study.tasks))
        counts = import_reference(cloud, study, on_task=lambda _: bar.advance(task))
    console.print(f"imported {len(study.tasks)} reference tasks into {cloud.uri}: {counts['tasks']} written, "
                  f"{counts['tasks_unchanged']} unchanged, {counts['knowledge']} knowledge entries checked "
                  f"(no fingerprints: rank them with --selector manual, or attach one with `tfp contribute`)")


@main.command("seed")
@click.argument("plan")
@click.option("--samples", type=int, default=1000, show_default=True, help="Draws per fingerprint.")
@click.option("--epochs", type=int, default=3, show_default=True, help="Epochs of each training (and study trial).")
@click.option("--image-size", type=int, default=128, show_default=True)
@click.option("--shrink", type=int, default=None, help="Train on at most n images per dataset (the paper: 800).")
@click.option("--no-baseline", is_flag=True, help="Fingerprint and contribute only; measure no baseline.")
@click.option("--tune-trials", type=int, default=4, show_default=True,
              help="Trials of each dataset's short architecture and policy study (0: none).")
@click.option("--transfer", is_flag=True, help="Also measure transfer from every other dataset of the plan "
              "(pretrain, then fine-tune): n x (n - 1) trainings.")
@click.option("--storage", default=None, help="Optuna RDB URL, or 'mlflow' for the cloud's own store, shared by "
              "several workers (machines): each dataset is claimed by one, a dead worker's is taken over. Default: "
              "this process alone.")
@click.option("--heartbeat", type=int, default=60, show_default=True,
              help="Seconds between a worker's heartbeats (with --storage); three missed: taken over.")
@click.option("--device", default=None, help="cpu or cuda (default: CUDA when present).")
@click.option("--dry-run", is_flag=True, help="Print the plan and its expected cost; read no data, write nothing.")
@click.option("--trusted", default=None, metavar="PATTERNS",
              help="Each study's warm start learns only from tasks, knowledge and studies of these contributors.")
@DATA_ROOT
@TRACKING_URI
def seed_command(plan: str, samples: int, epochs: int, image_size: int, shrink: int | None, no_baseline: bool,
                 tune_trials: int, transfer: bool, storage: str | None, heartbeat: int, device: str | None,
                 dry_run: bool, trusted: str | None, data_root: str | None, tracking_uri: str | None) -> None:
    """Build a starter cloud from public datasets: PLAN is a YAML file, or `starter` (the MedMNIST+ 2-D sets and the
    published tasks that are public). Each dataset is fingerprinted and contributed, its no-transfer baseline
    measured and a short study run; a published task gets its fingerprint attached. Rerunning resumes where it
    stopped; with --storage, several workers share the plan."""
    from tfp_mlflow.cloud import Cloud
    from tfp_mlflow.workflows.seeding import seed_cloud

    cloud = Cloud(tracking_uri)

    def show(step) -> None:
        if step.step == "note":
            console.print(step.note, highlight=False, markup=False)
        elif not dry_run:
            timing = f" ({step.seconds:.0f} s)" if step.status == "done" else ""
            console.print(f"{step.task}: {step.step} {step.status}{timing}" + (f": {step.note}" if step.note else ""),
                          highlight=False, markup=False)
    steps = seed_cloud(plan, cloud, samples=samples, epochs=epochs, image_size=image_size, shrink=shrink,
                       baseline=not no_baseline, tune_trials=tune_trials, transfer=transfer, dry_run=dry_run,
                       device=device, storage=storage, heartbeat=heartbeat, trusted=trusted, data_root=data_root,
                       on_step=show)
    steps = [s for s in steps if s.step != "note"]
    if dry_run:
        table = Table(title=f"tfp seed {plan}: the plan (estimates for a 2-core CPU)")
        for column in ("dataset", "step", "status", "expected", "note"):
            table.add_column(column)
        for step in steps:
            table.add_row(step.task, step.step, step.status,
                          f"{step.seconds / 60:.1f} min" if step.status == "planned" and step.seconds else "-",
                          step.note)
        console.print(table)
        total = sum(s.seconds for s in steps if s.status == "planned")
        console.print(f"expected: about {total / 3600:.1f} h on a 2-core CPU (fingerprints at 30 draws/s, training "
                      f"at 25 img/s at 128 px; a GPU is one to two orders of magnitude faster)")
        return
    done = sum(s.status == "done" for s in steps)
    console.print(f"seeded {cloud.uri}: {done} steps run here, {len(steps) - done} already done")


@main.command("keywords")
@TRACKING_URI
@JSON_OUT
def keywords_command(tracking_uri: str | None, json_out: str | None) -> None:
    """The words the cloud's tasks are described by, with how many tasks use each: what --keywords is matched
    against (case, spaces, - and _ do not matter; a word that is part of a term reaches it: fundus ->
    fundus_photography)."""
    from tfp_mlflow.cloud import Cloud
    from tfp_mlflow.workflows.recommending import cloud_vocabulary

    counts, origin = cloud_vocabulary(Cloud(tracking_uri))
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    if emit_json({"source": origin, "keywords": dict(ordered)}, json_out):
        return
    table = Table(title=f"keywords of {origin}")
    table.add_column("keyword")
    table.add_column("tasks", justify="right")
    for word, count in ordered:
        table.add_row(word, str(count))
    console.print(table)


@main.group("cloud")
def cloud_group() -> None:
    """Maintenance of a knowledge cloud."""


@cloud_group.command("init")
@click.option("--spec", "spec_path", type=click.Path(dir_okay=False, exists=True),
              help="The cloud's spec (default: the shipped one).")
@click.option("--grant", "grants", multiple=True, metavar="ACCOUNT=PERMISSION",
              help="On a tfp-basic-auth server: give ACCOUNT READ, EDIT or MANAGE on every tfp experiment "
                   "(repeatable; e.g. --grant alice=EDIT --grant guest=READ).")
@TRACKING_URI
def init_command(spec_path: str | None, grants: tuple[str, ...], tracking_uri: str | None) -> None:
    """Prepare a cloud as its owner: create every experiment tfp writes, set the spec, name yourself the owner.
    Behind `--app-name tfp-basic-auth` only an admin may; then grant accounts with MLflow's own permissions
    (docs/server.md)."""
    from tfp_mlflow.cloud import Cloud
    from tfp_mlflow.errors import BadInputError
    from tfp_mlflow.spec import FingerprintSpec

    pairs = [g.partition("=") for g in grants]
    if any(not account or not sep for account, sep, _ in pairs):
        raise BadInputError("--grant takes ACCOUNT=PERMISSION, e.g. --grant alice=EDIT")
    cloud = Cloud(tracking_uri)
    ids = cloud.initialise(FingerprintSpec.load(spec_path) if spec_path else None,
                           {account: permission.upper() for account, _, permission in pairs})
    console.print(f"{cloud.uri}: experiments {', '.join(f'{name} ({ids[name]})' for name in ids)}; spec "
                  f"{cloud.spec_id()}")


@cloud_group.command("pack")
@TRACKING_URI
def pack_command(tracking_uri: str | None) -> None:
    """Write a snapshot of every fingerprint (one file, members named by their SHA-256), so a new client's first
    query downloads one file plus what was contributed since; run it on a schedule."""
    from tfp_mlflow.cloud import Cloud

    cloud = Cloud(tracking_uri)
    packed = cloud.pack()
    console.print(f"packed {packed['tasks']} fingerprints of {cloud.uri} into run {packed['run_id']} "
                  f"(sha256 {str(packed['sha256'])[:16]}...)")
