"""Your own training code, your own MLflow runs: a fingerprint and a measured result logged next to them.

:func:`log_task` fingerprints a run's training data with the same frozen backbone, spec and draws as
``tfp fingerprint`` (a fingerprint of the same files drawn before is reused), logs it as an artifact of the run with
a picture of it, as an MLflow dataset input (context ``training``, digest the fingerprint's checksum) and as tags.
:func:`log_result` records what the run measured in the form the cloud's knowledge uses. Nothing reaches a cloud
unless asked (``contribute=``), or until ``tfp harvest`` reads the runs (:mod:`tfp_mlflow.workflows.harvesting`).
The Lightning callback is :class:`tfp_mlflow.lightning.TaskCallback`.

    with mlflow.start_run():
        tfp_mlflow.log_task("data/derm/train", name="derm", keywords=["skin", "dermoscopy"])
        ...                                                     # your training loop
        tfp_mlflow.log_result(architecture="resnet18", balanced_accuracy=0.81, held_out=400)
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tfp_mlflow.cloud.knowledge import Knowledge, KnowledgeRow
from tfp_mlflow.cloud.schema import KnowledgeKind
from tfp_mlflow.cloud.store import open_cloud
from tfp_mlflow.cloud.user_runs import UserRuns
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.fingerprint import Fingerprint, validate_task_name

__all__ = ["RUN_FINGERPRINT", "RUN_PICTURE", "RESULT", "TrackedTask", "log_task", "log_result", "run_knowledge",
           "attach_recommendation"]

#: Where a run keeps its task's fingerprint and its picture.
RUN_FINGERPRINT = "tfp/fingerprint.npz"
RUN_PICTURE = "tfp/fingerprint.png"
#: Tags and metrics a run's measured result is recorded under (read back by ``tfp harvest``).
RESULT = {"architecture": "tfp.result.architecture", "pretrained": "tfp.result.pretrained",
          "cotraining": "tfp.result.cotraining", "policy_id": "tfp.result.policy_id",
          "held_out": "tfp.result.held_out", "balanced_accuracy": "tfp.balanced_accuracy", "auroc": "tfp.auroc"}
#: What says a run started from no other task's data.
NO_SOURCE = frozenset({"", "none", "false", "0", "imagenet", "true", "1", "default", "scratch", "random"})


@dataclass(frozen=True)
class TrackedTask:
    """What :func:`log_task` logged: the run, the task's name and its fingerprint's checksum."""

    run_id: str
    name: str
    sha256: str
    fingerprint: Fingerprint


def log_task(data: Any, *, name: str | None = None, keywords: Sequence[str] = (), samples: int | None = None,
             contribute: Any = None, recommend: Any = None, run_id: str | None = None,
             tracking_uri: str | None = None, progress: bool = False) -> TrackedTask:
    """Fingerprint ``data`` and log it next to an MLflow run (the active one, or ``run_id``).

    Parameters
    ----------
    data : str, path, Fingerprint, DataLoader or dataset
        What ``tfp fingerprint`` reads (a folder of class folders, a CSV manifest, ``medmnist:NAME@SIZE``,
        ``hf:ORG/NAME``, a ``.npz``), a :class:`Fingerprint`, or the training data as your code holds it: a
        ``DataLoader`` or dataset over image files (torchvision's ``ImageFolder``, anything with ``root`` and
        ``samples``) or a MedMNIST dataset object.
    name, keywords
        The task's name (default: the data's) and the words others find it by.
    samples : int, optional
        Draws (default: as ``tfp recommend``: 1,000 on a CPU, the spec's on a GPU).
    contribute : Cloud or str, optional
        Also contribute the task to this cloud (with the run as provenance of its data).
    recommend : Cloud or str, optional
        Also ask this cloud what worked on the nearest tasks and link the answer from the run (``tfp.suggested.*``
        tags and the recommendation's run), for whoever browses the run in MLflow's UI.
    """
    from tfp_mlflow.workflows.targets import target_fingerprint

    runs, run_id = UserRuns.active(run_id, tracking_uri)
    source, data_uri = as_source(data)
    cloud = open_cloud(contribute) if contribute is not None else None
    fingerprint = target_fingerprint(source, cloud, samples=samples, name=name, keywords=list(keywords),
                                     progress=progress)
    if name:
        fingerprint = _renamed(fingerprint, name, keywords)
    validate_task_name(fingerprint.name)
    with tempfile.TemporaryDirectory() as tmp:
        path = fingerprint.save(Path(tmp) / "fingerprint.npz")
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        runs.log_file(run_id, path, "tfp")
        try:
            from tfp_mlflow.plots import plot_fingerprint

            runs.log_file(run_id, plot_fingerprint(fingerprint, Path(tmp) / "fingerprint.png"), "tfp")
        except ImportError:   # matplotlib is optional: the picture is a courtesy
            pass
    runs.log_training_input(run_id, fingerprint.name, sha, data_uri)
    runs.set_tags(run_id, {"tfp.task": fingerprint.name, "tfp.fingerprint_sha256": sha,
                           "tfp.keywords": ",".join(fingerprint.keywords), "tfp.data_uri": data_uri})
    if cloud is not None:
        cloud.contribute(fingerprint, data_uri=data_uri or None)
    if recommend is not None:
        attach_recommendation(runs, run_id, fingerprint, open_cloud(recommend))
    return TrackedTask(run_id, fingerprint.name, sha, fingerprint)


def attach_recommendation(runs: UserRuns, run_id: str, fingerprint: Fingerprint, cloud) -> Any:
    """Ask ``cloud`` what worked on the tasks nearest the run's data, and link the answer from the run: the
    recommendation's own run, and the first suggestion of each scenario as ``tfp.suggested.*`` tags."""
    from tfp_mlflow.recommend import recommend

    result = recommend(cloud, fingerprint)
    tags = {"tfp.recommendation_run": result.run_id or ""}
    for scenario, advice in result.scenarios.items():
        if advice.items:
            first = advice.items[0]
            what = first.architecture or first.policy_id or first.source
            tags[f"tfp.suggested.{scenario}"] = f"{what} (from {first.source}, rank {first.rank})"
    runs.set_tags(run_id, {key: value[:500] for key, value in tags.items()})
    return result


def log_result(*, architecture: str = "", balanced_accuracy: float | None = None, auroc: float | None = None,
               held_out: int | None = None, pretrained: str = "", cotraining: str = "",
               policy: dict | str | os.PathLike | None = None, contribute: Any = None, run_id: str | None = None,
               tracking_uri: str | None = None) -> list[Knowledge]:
    """Record what the run measured, in the form the cloud's knowledge uses; returns that knowledge.

    ``architecture`` is a timm name; ``pretrained`` / ``cotraining`` name another task of the cloud when the run
    started from (or trained beside) its data (``"imagenet"`` or nothing: no source); ``policy`` an albumentations
    policy (its JSON, a dict or a file) the run trained with; ``held_out`` how many images the metrics were
    measured on. With ``contribute`` the knowledge goes to that cloud too (the run's task must be there).
    """
    runs, run_id = UserRuns.active(run_id, tracking_uri)
    task = runs.get(run_id).tags.get("tfp.task")
    if not task:
        raise BadInputError(f"run {run_id} has no task: call tfp_mlflow.log_task(...) in it first")
    policy_json, policy_id = _policy(policy)
    # Checked first: a value the cloud would refuse is one line, and nothing is logged.
    knowledge = run_knowledge(task, run_id, architecture=architecture, balanced_accuracy=balanced_accuracy,
                              auroc=auroc, held_out=held_out, pretrained=pretrained, cotraining=cotraining,
                              policy=(policy_id, policy_json) if policy_json is not None else None)
    runs.set_tags(run_id, {RESULT["architecture"]: architecture, RESULT["pretrained"]: pretrained,
                           RESULT["cotraining"]: cotraining, RESULT["policy_id"]: policy_id,
                           RESULT["held_out"]: "" if held_out is None else str(int(held_out))})
    runs.log_metrics(run_id, {RESULT[key]: value for key, value in (("balanced_accuracy", balanced_accuracy),
                                                                   ("auroc", auroc)) if value is not None})
    if policy_json is not None:
        runs.log_json(run_id, policy_json, f"tfp/policy/{policy_id}.json")
    if contribute is not None:
        cloud = open_cloud(contribute)
        for item in knowledge:
            cloud.add_knowledge(item)
    return knowledge


def run_knowledge(task: str, run_id: str, *, architecture: str = "", balanced_accuracy: float | None = None,
                  auroc: float | None = None, held_out: int | None = None, pretrained: str = "",
                  cotraining: str = "", policy: tuple[str, dict] | None = None,
                  provenance: str | None = None, baseline: bool | None = None) -> list[Knowledge]:
    """One run's measured result as the cloud's knowledge (what ``tfp train --contribute`` writes): an
    architecture row; a transfer outcome when it started from (or co-trained with) another task, else a baseline;
    the policy it trained with (``baseline=False``: it started from weights that are no task, so no baseline).
    Validated: a bad value is one line, and nothing is half-made."""
    if balanced_accuracy is None and auroc is None:
        raise BadInputError(f"run {run_id} recorded no metric: give balanced_accuracy and/or auroc")
    provenance = provenance or f"runs:/{run_id}"
    row: dict[str, Any] = dict(balanced_accuracy=None if balanced_accuracy is None else float(balanced_accuracy),
                               auroc=None if auroc is None else float(auroc), evidence_run=run_id,
                               held_out=_count(held_out), repetition=0)
    source_kind = [(KnowledgeKind.PRETRAINING, pretrained), (KnowledgeKind.COTRAINING, cotraining)]
    sources = [(kind, s) for kind, s in source_kind if str(s).strip().lower() not in NO_SOURCE]
    items = []
    if architecture:
        items.append(Knowledge(task, KnowledgeKind.ARCHITECTURE, (KnowledgeRow(architecture=architecture, **row),),
                               provenance=provenance))
    for kind, source in sources:
        items.append(Knowledge(task, kind, (KnowledgeRow(source=str(source), **row),), provenance=provenance))
    if not sources and baseline is not False:
        items.append(Knowledge(task, KnowledgeKind.BASELINE, (KnowledgeRow(**row),), provenance=provenance))
    if policy is not None:
        policy_id, policy_json = policy
        items.append(Knowledge(task, KnowledgeKind.POLICY, (KnowledgeRow(policy_id=policy_id, **row),),
                               provenance=provenance, policies={policy_id: policy_json}))
    for item in items:
        for r in item.rows:
            r.validate(item.kind)
    return items


def as_source(data: Any) -> tuple[Any, str]:
    """What :func:`log_task` fingerprints, and the data's address for the dataset input (``""``: none)."""
    from tfp_mlflow.extract.sources import is_library_source

    if isinstance(data, Fingerprint):
        return data, ""
    if isinstance(data, (str, os.PathLike)):
        text = str(data)
        return text, text if is_library_source(text) else str(Path(text).absolute())
    data = getattr(data, "dataset", data)                   # a DataLoader: its dataset
    flag, size = getattr(data, "flag", None), getattr(data, "size", None)
    if flag and type(data).__module__.startswith("medmnist"):
        source = f"medmnist:{flag}" + (f"@{size}" if size and size != 28 else "")
        return source, source
    samples = getattr(data, "samples", None) or getattr(data, "imgs", None)
    if samples and getattr(data, "classes", None) is not None:
        from tfp_mlflow.extract.datasets import ImageDataset

        classes = list(data.classes)
        root = Path(getattr(data, "root", ".")).absolute()
        return (ImageDataset(root, tuple(Path(p) for p, _ in samples), tuple(classes[c] for _, c in samples),
                             name=root.name), str(root))
    raise BadInputError(f"cannot fingerprint a {type(data).__name__}: give the folder, CSV manifest or "
                        f"medmnist:/hf: name it reads from, or a dataset over image files (root and samples)")


def _renamed(fingerprint: Fingerprint, name: str, keywords: Sequence[str]) -> Fingerprint:

    return replace(fingerprint, name=name, keywords=tuple(keywords) or fingerprint.keywords)


def _policy(policy: dict | str | os.PathLike | None) -> tuple[dict | None, str]:
    """An albumentations policy as JSON and its id (content hash); a policy that does not load is one line."""
    if policy is None:
        return None, ""
    if isinstance(policy, dict):
        content = policy
    else:
        text = str(policy)
        try:
            content = json.loads(Path(text).read_text() if Path(text).is_file() else text)
        except (OSError, ValueError):
            raise BadInputError(f"policy {text[:80]!r} is neither albumentations JSON nor a file of it") from None
    if not isinstance(content, dict) or "transform" not in content:
        raise BadInputError("policy is not albumentations' saved JSON (a dict with 'transform'); save it with "
                            "A.save(transform, path, data_format='json')")
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]
    return content, f"policy-{digest}"


def _count(value: Any) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        raise BadInputError(f"held-out size {value!r} is not a count of images") from None


