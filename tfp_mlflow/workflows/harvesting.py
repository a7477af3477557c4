"""``tfp harvest``: the runs a team already logs to MLflow, turned into knowledge of the cloud.

A run counts when its task is known, from a fingerprint logged next to it (:func:`tfp_mlflow.log_task`, or
:class:`tfp_mlflow.lightning.TaskCallback`) or from an MLflow dataset input whose source ``tfp fingerprint`` reads (a
folder of class folders, a CSV manifest, ``medmnist:``, ``hf:``), and when it measured something: the result
:func:`~tfp_mlflow.log_result` recorded, or the run's own parameters and metrics read through a
:class:`RunMapping` (common names by default; a small JSON or YAML file overrides them). Each run becomes the knowledge
``tfp train --contribute`` writes: an architecture row, a transfer outcome when its pretrained weights or co-training
data are another task of the cloud, else a baseline, with the run as provenance. Every run is checked before anything
is written; a rerun adds nothing twice (tasks known by their fingerprint's checksum, knowledge by its content).
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from tfp_mlflow.cloud.knowledge import Knowledge
from tfp_mlflow.cloud.records import contributor as current_contributor
from tfp_mlflow.cloud.schema import ARTIFACT_LIMITS, Artifact, Kind, KnowledgeKind
from tfp_mlflow.cloud.user_runs import UserRun, UserRuns
from tfp_mlflow.errors import BadInputError, TfpError
from tfp_mlflow.fingerprint import Fingerprint, task_name_from, validate_task_name
from tfp_mlflow.workflows.own_runs import NO_SOURCE, RESULT, RUN_FINGERPRINT, _policy, run_knowledge

__all__ = ["RunMapping", "Harvested", "HarvestReport", "harvest", "MAX_RUNS"]

#: Runs one harvest reads at most (``--max-runs``).
MAX_RUNS = 10_000


@dataclass(frozen=True)
class RunMapping:
    """Where a run keeps what it measured: for each field, the names tried in order. A name is ``params.X``,
    ``metrics.X``, ``tags.X`` or a bare ``X`` (params, then tags, then metrics)."""

    architecture: tuple[str, ...] = ("model", "model_name", "arch", "architecture", "backbone")
    pretrained: tuple[str, ...] = ("pretrained", "weights", "pretrained_on", "init", "init_from")
    cotraining: tuple[str, ...] = ("cotraining", "cotrain", "cotraining_data", "extra_data")
    policy: tuple[str, ...] = ("augmentation", "policy", "augmentation_policy")
    balanced_accuracy: tuple[str, ...] = ("val_balanced_accuracy", "val_bacc", "val_balanced_acc",
                                          "balanced_accuracy", "bacc", "val/bacc", "val/balanced_accuracy")
    auroc: tuple[str, ...] = ("val_auroc", "val_auc", "val_roc_auc", "auroc", "auc", "val/auroc", "val/auc")
    held_out: tuple[str, ...] = ("held_out", "val_size", "n_val", "num_val", "val_samples", "num_val_images")

    @classmethod
    def load(cls, path: str | Path | None) -> RunMapping:
        """The defaults, with the fields a JSON or YAML file names replaced (a name or a list of names)."""
        if path is None:
            return cls()
        text = Path(path).read_text()
        try:
            if Path(path).suffix in (".yaml", ".yml"):
                import yaml

                content = yaml.safe_load(text)
            else:
                content = json.loads(text)
        except Exception:
            raise BadInputError(f"mapping {str(path)!r} is not JSON or YAML") from None
        known = {f.name for f in fields(cls)}
        if not isinstance(content, dict) or set(content) - known:
            wrong = sorted(set(content) - known) if isinstance(content, dict) else [type(content).__name__]
            raise BadInputError(f"mapping {str(path)!r} names {', '.join(map(str, wrong))}; its keys are "
                                f"{', '.join(sorted(known))}")
        return replace(cls(), **{k: (v,) if isinstance(v, str) else tuple(map(str, v)) for k, v in content.items()})


@dataclass
class Harvested:
    """One run as the harvest read it: its task, what it measured, and what became of it (``status``: ``new``,
    ``in the cloud``, ``contributed`` or ``skipped``, with the reason)."""

    run_id: str
    run_name: str = ""
    task: str = ""
    what: str = ""
    status: str = "skipped"
    reason: str = ""
    knowledge: list[Knowledge] = field(default_factory=list)
    fingerprint: Fingerprint | None = field(default=None, repr=False)
    data_uri: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "run_name": self.run_name, "task": self.task, "what": self.what,
                "status": self.status, "reason": self.reason, "knowledge": [k.kind for k in self.knowledge]}


@dataclass
class HarvestReport:
    """What a harvest found, run by run, and whether it wrote it."""

    source: str
    runs: list[Harvested]
    contributed: bool

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for run in self.runs:
            out[run.status] = out.get(run.status, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "contributed": self.contributed, "counts": self.counts(),
                "runs": [r.to_json() for r in self.runs]}


def harvest(experiments: Sequence[str], cloud=None, *, source: str | None = None, filter_string: str = "",
            mapping: RunMapping = RunMapping(), contribute: bool = False, samples: int | None = None,
            max_runs: int = MAX_RUNS, on_run: Callable[[Harvested], None] | None = None) -> HarvestReport:
    """Read the finished runs of ``experiments`` (names or ids) on ``source`` (default: the cloud's own tracking
    server) and, with ``contribute``, write what they measured into ``cloud``.

    Without ``contribute`` nothing is written: the report says what would be (``new``) and what is already there.
    """
    from tfp_mlflow.cloud import open_cloud

    cloud = open_cloud(cloud)
    client = UserRuns(source or cloud.uri)
    source = client.uri
    runs = client.search(experiments, filter_string, max_runs)
    spec = cloud.spec()
    known = {t.name: t for t in cloud.tasks()}
    me = current_contributor()
    drawn: dict[str, Fingerprint] = {}
    report = HarvestReport(source, [], contribute)
    for run in runs:                       # every run read and checked before anything is written
        report.runs.append(_read(client, run, mapping, samples, drawn, spec))
        if on_run is not None:
            on_run(report.runs[-1])
    harvested = {item.task for item in report.runs if item.status != "skipped"}
    for item in report.runs:
        if item.status != "skipped":
            _check_sources(item, known, harvested)
            _mark(cloud, item, known, me)
        if contribute and item.status == "new":
            _write(cloud, item, known)
    return report


def _read(client: UserRuns, run: UserRun, mapping: RunMapping, samples: int | None, drawn: dict,
          spec) -> Harvested:
    """One run: its task and its knowledge, or the one-line reason it is skipped."""
    item = Harvested(run.run_id, run_name=run.run_name)
    if run.status != "FINISHED":
        item.reason = f"the run is {run.status}, not FINISHED"
        return item
    try:
        result = _result(client, run, mapping)        # cheap, and a run without a result draws nothing
        item.fingerprint, item.data_uri = _task_of(client, run, samples, drawn)
        if item.fingerprint is None:
            item.reason = ("no tfp fingerprint and no dataset input tfp can read (log one with "
                           "tfp_mlflow.log_task)")
            return item
        if spec is not None and item.fingerprint.spec_id != spec.id:
            item.reason = "its fingerprint was drawn with another spec than the cloud's"
            return item
        item.task = validate_task_name(item.fingerprint.name)
        item.knowledge = run_knowledge(item.task, run.run_id, provenance=f"mlflow run {run.run_id}", **result)
        item.what = _described(result)
        item.status = "new"
    except TfpError as exc:
        item.reason = str(exc)
    return item


def _task_of(client: UserRuns, run: UserRun, samples: int | None, drawn: dict) -> tuple[Fingerprint | None, str]:
    """The run's task: the fingerprint logged next to it (checked against its recorded checksum), or one drawn from
    its dataset input's source (once per source; a training input first)."""
    tags = run.tags
    sha = tags.get("tfp.fingerprint_sha256", "")
    if sha:
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download(run.run_id, RUN_FINGERPRINT, tmp,
                                   max_bytes=ARTIFACT_LIMITS[Artifact.FINGERPRINT])
            if hashlib.sha256(path.read_bytes()).hexdigest() != sha:
                raise BadInputError("its fingerprint does not match the checksum the run recorded")
            fingerprint = Fingerprint.load(path)
        name = tags.get("tfp.task") or fingerprint.name
        return replace(fingerprint, name=name), tags.get("tfp.data_uri", "")
    for dataset in sorted(run.inputs, key=lambda d: d.context != "training"):
        source = _readable(dataset.source)
        if source is None:
            continue
        if source not in drawn:
            from tfp_mlflow.workflows.targets import target_fingerprint

            fingerprint = target_fingerprint(source, None, samples=samples, progress=False)
            drawn[source] = replace(fingerprint, name=task_name_from(dataset.name or fingerprint.name))
        return drawn[source], source
    return None, ""


def _readable(source: str) -> str | None:
    """A dataset input's source as something ``tfp fingerprint`` reads, else ``None``."""
    from tfp_mlflow.extract.sources import is_library_source

    try:
        content = json.loads(source)
    except (TypeError, ValueError):
        content = {"uri": source}
    values = [content.get(k) for k in ("uri", "url", "path", "source")] if isinstance(content, dict) else []
    for value in filter(None, values):
        text = str(value).removeprefix("file://")
        if is_library_source(text):
            return text
        path = Path(text)
        if path.is_dir() or (path.is_file() and path.suffix.lower() == ".csv"):
            return str(path)
    return None


def _result(client: UserRuns, run: UserRun, mapping: RunMapping) -> dict[str, Any]:
    """What the run measured: the result :func:`log_result` recorded, else the mapping's names."""
    tags, metrics = run.tags, run.metrics
    out: dict[str, Any]
    if RESULT["architecture"] in tags or RESULT["balanced_accuracy"] in metrics or RESULT["auroc"] in metrics:
        out = {key: tags.get(RESULT[key], "") for key in ("architecture", "pretrained", "cotraining")}
        out.update(balanced_accuracy=metrics.get(RESULT["balanced_accuracy"]), auroc=metrics.get(RESULT["auroc"]),
                   held_out=tags.get(RESULT["held_out"]) or None)
        policy_id = tags.get(RESULT["policy_id"])
        if policy_id:
            out["policy"] = (policy_id, _artifact_json(client, run, f"tfp/policy/{policy_id}.json"))
        return out
    out = {key: _value(run, getattr(mapping, key), key) or "" for key in ("architecture", "pretrained",
                                                                         "cotraining")}
    for key in ("balanced_accuracy", "auroc"):
        value = _value(run, getattr(mapping, key), key)
        out[key] = _metric(value, key) if value not in (None, "") else None
    out["held_out"] = _value(run, mapping.held_out, "held_out") or None
    for key in ("pretrained", "cotraining"):
        value = str(out[key]).strip()
        if value.lower() not in NO_SOURCE and not _is_task_name(value):
            out[key], out["baseline"] = "", False     # a checkpoint's path: no task of the cloud, and no baseline
    policy = _value(run, mapping.policy, "policy")
    if policy:
        out["policy"] = _policy_of(client, run, str(policy))
    if out["balanced_accuracy"] is None and out["auroc"] is None:
        names = ", ".join([*mapping.balanced_accuracy[:3], *mapping.auroc[:3]])
        raise BadInputError(f"no validation metric found (tried {names}, ...; name yours in a --mapping file)")
    return out


def _is_task_name(value: str) -> bool:
    try:
        validate_task_name(value)
        return True
    except BadInputError:
        return False


def _value(run: UserRun, names: Sequence[str], what: str) -> Any:
    """The first of ``names`` the run has; a prefixed name the run lacks is an error (the mapping named it)."""
    data = run
    for name in names:
        where, _, key = name.partition(".") if name.startswith(("params.", "metrics.", "tags.")) else ("", "", name)
        if where:
            table = getattr(data, where)
            if key not in table:
                raise BadInputError(f"the mapping's {what} names {name}, which this run does not have")
            return table[key]
        for table in (data.params, data.tags, data.metrics):
            if key in table:
                return table[key]
    return None


def _metric(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadInputError(f"{name} {str(value)[:40]!r} is not a number") from None
    if number > 1.0 and number <= 100.0:   # a percentage
        number /= 100.0
    return number


def _policy_of(client: UserRuns, run: UserRun, value: str) -> tuple[str, dict] | None:
    """A policy given as albumentations JSON in a param or as a path to an artifact of the run."""

    text = value.strip()
    if not text.startswith("{"):
        if "/" not in text and not text.endswith(".json"):
            return None                          # a policy's name ("randaugment"): nothing to transfer
        content = _artifact_json(client, run, text)
        text = json.dumps(content)
    policy, policy_id = _policy(text)
    return None if policy is None else (policy_id, policy)


def _artifact_json(client: UserRuns, run: UserRun, path: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download(run.run_id, path, tmp, max_bytes=1_000_000)
        try:
            return json.loads(local.read_text())
        except (OSError, ValueError):
            raise BadInputError(f"artifact {path} cannot be read as JSON") from None


def _described(result: dict[str, Any]) -> str:
    parts = [result.get("architecture") or "?"]
    for key, label in (("pretrained", "pretrained on"), ("cotraining", "co-trained with")):
        if str(result.get(key) or "").lower() not in NO_SOURCE:
            parts.append(f"{label} {result[key]}")
    for key, label in (("balanced_accuracy", "bacc"), ("auroc", "AUROC")):
        if result.get(key) is not None:
            parts.append(f"{label} {float(result[key]):.3f}")
    if result.get("held_out"):
        parts.append(f"on {result['held_out']} held out")
    if result.get("policy"):
        parts.append("with a policy")
    return ", ".join(parts)


def _check_sources(item: Harvested, known: dict, harvested: set[str]) -> None:
    """A transfer outcome needs its source among the cloud's tasks (or this harvest's); else the run keeps its
    architecture row only, and says so."""
    tasks = set(known) | harvested | {item.task}
    transfers = [k for k in item.knowledge if k.kind in (KnowledgeKind.PRETRAINING, KnowledgeKind.COTRAINING)]
    unknown = [k for k in transfers if k.rows[0].source not in tasks or k.rows[0].source == item.task]
    if unknown:
        item.knowledge = [k for k in item.knowledge if k not in unknown]
        item.what += f" (source {unknown[0].rows[0].source} is no task of the cloud: architecture row only)"
    if not item.knowledge:
        item.status, item.reason = "skipped", "nothing it measured can be stated about a task of the cloud"


def _mark(cloud, item: Harvested, known: dict, me: str) -> None:
    """``in the cloud`` when its task and every table are there already (by checksum and content)."""
    task = known.get(item.task)
    if task is not None and task.contributor != me and not task.measured_by_account(me):
        item.status = "skipped"
        item.reason = (f"task {item.task!r} in the cloud is {task.contributor}'s; name yours differently "
                       f"(log_task(name=...)) or ask them to name you (`tfp contribute --measured-by`)")
        return
    stored = all(cloud.find_runs(Kind.KNOWLEDGE, knowledge_key=k.key(), contributor=me) for k in item.knowledge)
    if task is not None and stored:
        item.status = "in the cloud"


def _write(cloud, item: Harvested, known: dict) -> None:
    """The run's task (when the cloud lacks it) and its knowledge; each table is written whole or not at all."""
    try:
        if item.task not in known:
            known[item.task] = cloud.contribute(item.fingerprint, data_uri=item.data_uri or None)
        for knowledge in item.knowledge:
            cloud.add_knowledge(knowledge)
        item.status = "contributed"
    except TfpError as exc:
        item.status, item.reason = "skipped", str(exc)
