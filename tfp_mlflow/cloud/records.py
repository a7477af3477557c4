"""What cloud runs hold, read and checked: a task as the cloud describes it, the checks every contributed field
passes, and the contributor's name. Torch-free; :mod:`tfp_mlflow.cloud.store` does the MLflow calls."""
from __future__ import annotations

import base64
import getpass
import math
import os
import re
from collections.abc import Sequence
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass
from typing import Any

from tfp_mlflow.cloud.knowledge import MAX_ROWS, Knowledge
from tfp_mlflow.cloud.schema import KNOWLEDGE_KINDS, Param, Tag
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.fingerprint import validate_keywords, validate_task_name

__all__ = ["CloudTask", "LazyTasks", "task_from_run", "dataset_input", "validate_knowledge", "contributor", "short",
           "safe_file"]


@dataclass(frozen=True)
class CloudTask:
    """A task as the cloud describes it (its fingerprint is fetched on demand)."""

    name: str
    run_id: str
    keywords: tuple[str, ...] = ()
    domain: str = ""
    num_images: int = 0
    num_classes: int = 0
    shareable: bool = False
    data_uri: str = ""
    contributor: str = ""
    fingerprint_sha256: str = ""
    intrinsic_dim: float | None = None
    #: Accounts besides its contributor whose measured outcomes and baselines *on* this task count (its owner's say).
    measured_by: tuple[str, ...] = ()

    def measured_by_account(self, account: str) -> bool:
        """Whether an outcome or baseline on this task written by ``account`` is its owner's evidence."""
        return account == self.contributor or account in self.measured_by

    @property
    def has_fingerprint(self) -> bool:
        return bool(self.fingerprint_sha256)


class LazyTasks(SequenceABC):
    """Cloud tasks as selector inputs, each fingerprint loaded (through the cache) only when it is reached."""

    def __init__(self, cloud, tasks: Sequence[CloudTask], variants: Sequence[str], moments: bool) -> None:
        self.cloud, self.tasks, self.variants, self.moments = cloud, list(tasks), tuple(variants), moments

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.cloud.as_tasks([self.tasks[index]], with_fingerprints=True, variants=self.variants,
                                   moments=self.moments)[0]

    def __iter__(self):
        """In order, a few loaded ahead on a thread per core (decompressing releases the GIL)."""
        from tfp_mlflow._threads import read_ahead

        return read_ahead(self.__getitem__, range(len(self)))


def task_from_run(run) -> CloudTask:
    """The task a run describes; :class:`BadInputError` saying which field is unusable when one is (a run written
    through MLflow's API by hand can hold anything: its readers quarantine it)."""
    tags, params = run.tags, run.params

    def count(key: str) -> int:
        value = params.get(key, "0")
        if not re.fullmatch(r"[0-9]{1,11}", value):
            raise BadInputError(f"param {key}={value[:40]!r} is not a count")
        return int(value)

    dim = params.get(Param.INTRINSIC_DIM)
    if dim is not None:
        try:
            dim = float(dim)
        except ValueError:
            raise BadInputError(f"param {Param.INTRINSIC_DIM}={dim[:40]!r} is not a number") from None
        if not math.isfinite(dim) or dim < 0:
            raise BadInputError(f"param {Param.INTRINSIC_DIM}={dim!r} is not a finite dimension")
    sha = tags.get(Tag.FINGERPRINT_SHA256, "")
    if sha and not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise BadInputError(f"tag {Tag.FINGERPRINT_SHA256} is not a SHA-256")
    keywords = validate_keywords([k for k in tags.get(Tag.KEYWORDS, "").split(",") if k])
    return CloudTask(name=validate_task_name(tags.get(Tag.TASK, "")), run_id=run.run_id,
                     keywords=keywords, domain=tags.get(Tag.DOMAIN, ""), num_images=count(Param.NUM_IMAGES),
                     num_classes=count(Param.NUM_CLASSES),
                     shareable=tags.get(Tag.SHAREABLE) == "true", data_uri=tags.get(Tag.DATA_URI, ""),
                     contributor=tags.get(Tag.CONTRIBUTOR, ""), fingerprint_sha256=sha, intrinsic_dim=dim,
                     measured_by=validate_accounts(tags.get(Tag.MEASURED_BY, "")))


#: Accounts a task's owner may name as measuring it.
MAX_MEASURERS = 64


def validate_accounts(value: str | Sequence[str]) -> tuple[str, ...]:
    """Account names (comma-separated or a list): each non-empty, at most 256 characters, at most
    :data:`MAX_MEASURERS`; a one-line error otherwise."""
    names = [n.strip() for n in (value.split(",") if isinstance(value, str) else value)]
    names = list(dict.fromkeys(n for n in names if n))
    if len(names) > MAX_MEASURERS or any(len(n) > 256 for n in names):
        raise BadInputError(f"name at most {MAX_MEASURERS} accounts of at most 256 characters as measuring a task")
    return tuple(names)


def validate_knowledge(knowledge: Knowledge) -> None:
    if knowledge.kind not in KNOWLEDGE_KINDS:
        raise BadInputError(f"unknown knowledge kind {knowledge.kind!r}; use one of {', '.join(KNOWLEDGE_KINDS)}")
    validate_task_name(knowledge.task)
    if not knowledge.rows or len(knowledge.rows) > MAX_ROWS:
        raise BadInputError(f"{knowledge.kind} knowledge of {knowledge.task!r} needs 1 to {MAX_ROWS} rows")
    for row in knowledge.rows:
        row.validate(knowledge.kind)


def contributor() -> str:
    """Who is contributing: the caller whose credentials a tfp server forwards, else ``MLFLOW_TRACKING_USERNAME``,
    else the OS user (behind ``tfp-basic-auth`` the server accepts only the authenticated user)."""
    from tfp_mlflow.cloud.context import current_authorization

    forwarded = current_authorization()
    if forwarded and forwarded.lower().startswith("basic "):
        try:
            return base64.b64decode(forwarded[6:].strip()).decode().partition(":")[0]
        except ValueError:
            pass
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if user:
        return user
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


def short(value: Any, what: str, limit: int = 2000) -> str:
    value = "" if value is None else str(value)
    if len(value) > limit:
        raise BadInputError(f"{what} is {len(value)} characters long; at most {limit} are allowed")
    return value


def safe_file(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.+:-]{1,128}", name) or ".." in name:
        raise BadInputError(f"policy id {name!r} is invalid: use letters, digits and _.+:-")
    return name


def dataset_input(name: str, digest: str, data_uri: str):
    """The task's data as an MLflow dataset input (context ``fingerprint``, digest = the fingerprint's checksum)."""
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = MetaDataset(source=HTTPDatasetSource(url=data_uri or f"tfp://{name}"),  # type: ignore[abstract]
                          name=name, digest=digest[:16])
    # Dataset.to_dict() is the public form of the entity (name, digest, source, source_type, schema, profile).
    return DatasetInput(Dataset(**dataset.to_dict()), tags=[InputTag("mlflow.data.context", "fingerprint")])
