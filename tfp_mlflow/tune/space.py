"""The search space of `tfp tune`: what the scenarios transfer and what usually matters, from a small YAML/JSON file.

Keys (all optional)::

    architectures: [tf_efficientnet_lite0, resnet34]   # default: the paper's 20 + the cloud's, loadable here
    policies: [none, some-task-rep0]                    # default: every policy id in the cloud, plus none
    lr: [1.0e-4, 1.0e-2]                                # log-uniform
    weight_decay: [1.0e-6, 1.0e-2]                      # log-uniform
    truncate: [null, 2, 3]                              # TruncatedTL cut points (null = the whole backbone)
    epochs: 3                                           # the budget of every trial, or choices: [2, 4, 6]
    image_size: [64, 96, 128]                           # choices of side in pixels (default: --image-size)

A key with one value fixes it; ``epochs`` and ``image_size`` with several values are searched (categorical), and
then every trial records its own.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tfp_mlflow.errors import BadInputError

__all__ = ["SearchSpace", "PAPER_ARCHITECTURES", "NO_POLICY", "BUDGETS", "loadable_architectures"]

#: The paper's 20 candidate architectures (Supplementary Table 1; reference/tfp-paper/model_infos.csv).
PAPER_ARCHITECTURES = (
    "tf_efficientnet_b2", "tf_efficientnet_b2_ap", "tf_efficientnet_b2_ns", "tf_efficientnet_cc_b0_4e",
    "swsl_resnet50", "ssl_resnext50_32x4d", "regnetx_032", "regnety_032", "rexnet_100", "ecaresnet50d",
    "cspdarknet53", "mixnet_l", "cspresnext50", "cspresnet50", "ese_vovnet39b", "resnest50d", "hrnet_w18",
    "skresnet34", "mobilenetv3_large_100", "res2net50_26w_4s")
NO_POLICY = "none"
#: The training budget's parameters: searched when the space gives several values, else fixed.
BUDGETS = ("epochs", "image_size")
_KEYS = {"architectures", "policies", "lr", "weight_decay", "truncate", "epochs", "image_size"}


@dataclass(frozen=True)
class SearchSpace:
    """Choices and ranges of one study; :meth:`suggest` draws a trial's parameters from it.

    Parameters
    ----------
    architectures : tuple of str
        timm names (categorical).
    policies : tuple of str
        Policy ids of the cloud, and ``"none"`` (categorical).
    lr, weight_decay : (low, high)
        Log-uniform ranges.
    truncate : tuple of (int or None)
        Cut points (categorical); ``(None,)`` keeps the whole backbone.
    epochs : int or tuple of int
        Epochs of every trial; several values are searched (stored as a tuple).
    image_size : tuple of int
        Sides in pixels to search; one value fixes it, ``()`` keeps the training configuration's.
    left_out : tuple of str
        Architectures dropped because their weights cannot be loaded here (reported, not searched).
    """

    architectures: tuple[str, ...]
    policies: tuple[str, ...] = (NO_POLICY,)
    lr: tuple[float, float] = (1e-4, 1e-2)
    weight_decay: tuple[float, float] = (1e-6, 1e-2)
    truncate: tuple[int | None, ...] = (None,)
    epochs: tuple[int, ...] = (3,)
    image_size: tuple[int, ...] = ()
    left_out: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "epochs", _choices(self.epochs, "epochs", 1))
        object.__setattr__(self, "image_size", _choices(self.image_size, "image_size", 16))
        if not self.architectures:
            raise BadInputError("the search space has no architecture whose weights load here; list some under "
                                "`architectures:` (tf_efficientnet_lite0 installs offline)")
        if not self.policies:
            raise BadInputError("the search space has no policy; use [none] to search without one")
        for name in ("lr", "weight_decay"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise BadInputError(f"search space {name} must be [low, high] with 0 < low <= high, got "
                                    f"{[low, high]}")
        if not self.epochs:
            raise BadInputError("search space epochs must name at least one budget, e.g. `epochs: 3`")

    @property
    def searched(self) -> tuple[str, ...]:
        """The parameters a trial draws (``epochs`` and ``image_size`` only when they have several values)."""
        return ("architecture", "policy", "lr", "weight_decay", "truncate",
                *(name for name in BUDGETS if len(getattr(self, name)) > 1))

    def settings(self, params: dict[str, Any]) -> dict[str, int]:
        """The training budget of a trial with ``params``: its epochs, and its image side when the space sets one."""
        out = {"epochs": int(params.get("epochs", self.epochs[0]))}
        if self.image_size:
            out["image_size"] = int(params.get("image_size", self.image_size[0]))
        return out

    @classmethod
    def load(cls, path: str | os.PathLike | None, *, default_architectures: Sequence[str],
             default_policies: Sequence[str]) -> SearchSpace:
        """Read a YAML or JSON space file; missing keys take the defaults (the cloud's candidates)."""
        values: dict[str, Any] = {}
        if path is not None:
            values = _read(Path(path))
        architectures = tuple(values.get("architectures") or default_architectures)
        policies = tuple(str(p) for p in (values.get("policies") or (NO_POLICY, *default_policies)))
        truncate = tuple(None if v is None or v == "none" else int(v) for v in values.get("truncate", [None]))
        try:
            return cls(architectures=architectures, policies=policies,
                       lr=_range(values.get("lr", (1e-4, 1e-2)), "lr"),
                       weight_decay=_range(values.get("weight_decay", (1e-6, 1e-2)), "weight_decay"),
                       truncate=truncate or (None,), epochs=values.get("epochs", 3),
                       image_size=values.get("image_size", ()))
        except (TypeError, ValueError) as exc:
            if isinstance(exc, BadInputError):
                raise
            raise BadInputError(f"search space {str(path)!r}: {exc}") from None

    def suggest(self, trial) -> dict[str, Any]:
        """Draw one configuration from an Optuna trial (the same names as :meth:`violations` checks)."""
        return {"architecture": trial.suggest_categorical("architecture", list(self.architectures)),
                "policy": trial.suggest_categorical("policy", list(self.policies)),
                "lr": trial.suggest_float("lr", *self.lr, log=True),
                "weight_decay": trial.suggest_float("weight_decay", *self.weight_decay, log=True),
                "truncate": trial.suggest_categorical("truncate", list(self.truncate)),
                **{name: trial.suggest_categorical(name, list(getattr(self, name)))
                   for name in BUDGETS if name in self.searched}}

    def violations(self, params: dict[str, Any]) -> list[str]:
        """What in ``params`` lies outside the space, as readable phrases (empty when all is inside)."""
        out = []
        if params.get("architecture") not in self.architectures:
            out.append(f"architecture {params.get('architecture')!r} is not among the {len(self.architectures)} "
                       f"searched")
        if params.get("policy") not in self.policies:
            out.append(f"policy {params.get('policy')!r} is not among the {len(self.policies)} searched")
        for name in ("lr", "weight_decay"):
            low, high = getattr(self, name)
            if not low <= float(params.get(name, math.nan)) <= high:
                out.append(f"{name} {params.get(name)} is outside [{low:g}, {high:g}]")
        if params.get("truncate") not in self.truncate:
            out.append(f"truncate {params.get('truncate')!r} is not among {list(self.truncate)}")
        for name in BUDGETS:   # a configuration without them takes the space's (or a draw)
            if name in params and params[name] not in getattr(self, name):
                out.append(f"{name} {params[name]!r} is not among {list(getattr(self, name))}")
        return out

    def widened(self, params: dict[str, Any]) -> SearchSpace:
        """The space grown just enough to contain ``params`` (``--widen``: an explicit choice of the user)."""
        return replace(
            self,
            architectures=tuple(dict.fromkeys((*self.architectures, params["architecture"]))),
            policies=tuple(dict.fromkeys((*self.policies, params["policy"]))),
            lr=(min(self.lr[0], params["lr"]), max(self.lr[1], params["lr"])),
            weight_decay=(min(self.weight_decay[0], params["weight_decay"]),
                          max(self.weight_decay[1], params["weight_decay"])),
            truncate=tuple(dict.fromkeys((*self.truncate, params["truncate"]))),
            **{name: tuple(sorted({*getattr(self, name), int(params[name])}))
               for name in BUDGETS if name in params})

    def to_json(self) -> dict[str, Any]:
        return {"architectures": list(self.architectures), "policies": list(self.policies), "lr": list(self.lr),
                "weight_decay": list(self.weight_decay), "truncate": list(self.truncate),
                "epochs": self.epochs[0] if len(self.epochs) == 1 else list(self.epochs),
                "image_size": list(self.image_size), "left_out": list(self.left_out)}


def loadable_architectures(candidates: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split timm names into (loadable here, left out): offline weights, or files already in the hub cache."""
    from tfp_mlflow.extract.backbones import list_offline_backbones

    offline = set(list_offline_backbones())
    loadable: list[str] = []
    left_out: list[str] = []
    for name in dict.fromkeys(candidates):
        (loadable if name in offline or _in_hub_cache(name) else left_out).append(name)
    return loadable, left_out


def _in_hub_cache(name: str) -> bool:
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache

        config = timm.models.get_pretrained_cfg(name.split(".")[0])
        hub_id = getattr(config, "hf_hub_id", None) if config is not None else None
        if not hub_id:
            return False
        return any(isinstance(try_to_load_from_cache(hub_id, f), str)
                   for f in ("model.safetensors", "pytorch_model.bin"))
    except Exception:  # no timm config or hub client: treat as not loadable offline
        return False


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BadInputError(f"search space file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            values = json.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text)
    except Exception as exc:
        raise BadInputError(f"search space {str(path)!r} does not parse ({type(exc).__name__}); write YAML or "
                            f"JSON with keys {', '.join(sorted(_KEYS))}") from None
    if not isinstance(values, dict):
        raise BadInputError(f"search space {str(path)!r} must be a mapping with keys {', '.join(sorted(_KEYS))}")
    unknown = sorted(set(values) - _KEYS)
    if unknown:
        raise BadInputError(f"search space {str(path)!r} has unknown key {unknown[0]!r}; use "
                            f"{', '.join(sorted(_KEYS))}")
    return values


def _choices(value: Any, name: str, least: int) -> tuple[int, ...]:
    """One whole number or a list of them, as sorted distinct choices, each at least ``least``."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        numbers = [int(v) for v in values if not isinstance(v, bool) and float(v) == int(v)]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != len(values):
        raise BadInputError(f"search space {name} must be a whole number or a list of them, got {value!r}")
    if any(n < least for n in numbers):
        raise BadInputError(f"search space {name} must be at least {least}, got {min(numbers)}")
    return tuple(sorted(set(numbers)))


def _range(value: Any, name: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise BadInputError(f"search space {name} must be [low, high], got {value!r}")
    return float(value[0]), float(value[1])
