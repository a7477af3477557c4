"""The trained network: a timm backbone (optionally truncated, TruncatedTL) shared by one linear head per task.

One head is the plain case; co-training adds the source's head beside the target's; pretraining trains a head on
the source, then :meth:`Network.replace_head` gives the target a fresh one.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from tfp_mlflow.errors import BadInputError
from tfp_mlflow.extract.backbones import create_model, normalisation

__all__ = ["Network", "TruncatedBackbone", "build_network", "truncation_points"]


class TruncatedBackbone(nn.Module):
    """The bottom of a timm model up to feature stage ``cut`` (its ``feature_info`` index), globally pooled.

    TruncatedTL (Peng et al. 2022): the layers above the cut are removed from the model, not merely skipped, so
    the network is smaller and faster.
    """

    def __init__(self, model: nn.Module, cut: int) -> None:
        super().__init__()
        points = truncation_points(model)
        if not 0 <= cut < len(points):
            raise BadInputError(f"--truncate {cut} is outside 0..{len(points) - 1} for {type(model).__name__} "
                                f"(its stages: {', '.join(points)})")
        timm_model: Any = model   # timm's feature API: attributes nn.Module does not declare
        timm_model.prune_intermediate_layers(indices=[cut], prune_norm=True, prune_head=True)
        self.model = timm_model
        self.cut = cut
        self.num_features = int(timm_model.feature_info[cut]["num_chs"])
        self.pretrained_cfg = getattr(model, "pretrained_cfg", {})

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.model.forward_intermediates(images, indices=[self.cut], intermediates_only=True)[-1]
        return features.mean(dim=(2, 3))


def truncation_points(model: nn.Module) -> list[str]:
    """Names of the stages a model can be cut after (``--truncate`` indexes this list)."""
    info = getattr(model, "feature_info", None)
    if not info or not hasattr(model, "prune_intermediate_layers"):
        return []
    return [str(stage["module"]) for stage in info]


class Network(nn.Module):
    """``backbone`` → pooled features (n, num_features) → ``heads[task]`` → logits (n, classes of that task)."""

    def __init__(self, backbone: nn.Module, num_features: int, num_classes: Sequence[int]) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_features = num_features
        self.heads = nn.ModuleList(nn.Linear(num_features, n) for n in num_classes)

    def forward(self, images: torch.Tensor, task: int = 0) -> torch.Tensor:
        return self.heads[task](self.backbone(images))

    def replace_head(self, task: int, num_classes: int) -> None:
        """A freshly initialised head for ``task`` (pretraining → fine-tuning)."""
        self.heads[task] = nn.Linear(self.num_features, num_classes)


def build_network(architecture: str, num_classes: Sequence[int], *, weights: str | os.PathLike | None = None,
                  from_scratch: bool = False, truncate: int | None = None
                  ) -> tuple[Network, str, tuple[tuple[float, ...], tuple[float, ...]]]:
    """A :class:`Network` on the timm model ``architecture`` with ImageNet weights.

    Returns the network, where its weights came from, and the backbone's (mean, std) normalisation. Weights that
    cannot be loaded are an error; random initialisation only with ``from_scratch``.
    """
    model, source = create_model(architecture, weights, num_classes=0, pretrained=not from_scratch)
    mean, std, _ = normalisation(model)
    if truncate is not None:
        if not truncation_points(model):
            raise BadInputError(f"{architecture} cannot be truncated (timm gives it no feature stages); drop "
                                f"--truncate or choose a CNN such as resnet34 or tf_efficientnet_lite0")
        truncated = TruncatedBackbone(model, truncate)
        backbone: nn.Module = truncated
        num_features = truncated.num_features
    else:
        backbone, num_features = model, int(cast(Any, model).num_features)
    return Network(backbone, num_features, num_classes), source, (mean, std)
