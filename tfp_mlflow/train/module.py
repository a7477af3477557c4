"""The LightningModule: per-task cross-entropy on the shared network, class-balanced metrics on the target.

Batches carry a task index per sample (0 = the target). Each head's loss is computed on its own samples only and
the losses of the tasks present are averaged with equal weights (co-training, docs/method.md §5). Validation scores
head ``eval_task`` on the held-out split: balanced accuracy and macro one-vs-rest AUROC.
"""
from __future__ import annotations

import warnings
from typing import cast

import numpy as np
import pytorch_lightning as pl
import torch
from torch.nn import functional as F

from tfp_mlflow.train.network import Network

__all__ = ["TransferModule", "class_balanced_metrics"]


def class_balanced_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Balanced accuracy and macro AUROC (one-vs-rest) of ``probabilities`` (n, C) against ``labels`` (n,).

    AUROC is NaN when the held-out labels hold a single class (it is undefined there).
    """
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    predictions = probabilities.argmax(axis=1)
    balanced = float(balanced_accuracy_score(labels, predictions))
    classes = probabilities.shape[1]
    present = np.unique(labels)
    if len(present) < 2:
        auroc = float("nan")
    elif classes == 2:
        auroc = float(roc_auc_score(labels, probabilities[:, 1]))
    else:
        # Macro over the classes present in the held-out split; probabilities renormalised over them.
        scores = probabilities[:, present] / probabilities[:, present].sum(axis=1, keepdims=True)
        auroc = float(roc_auc_score(labels, scores, multi_class="ovr", average="macro", labels=present))
    return {"balanced_accuracy": balanced, "auroc": auroc}


class TransferModule(pl.LightningModule):
    """Trains :class:`Network` with AdamW and a cosine schedule; logs ``train_loss``, ``val_*`` per epoch."""

    def __init__(self, network: Network, *, lr: float = 1e-3, weight_decay: float = 1e-4, epochs: int = 5,
                 eval_task: int = 0) -> None:
        super().__init__()
        self.network = network
        self.lr = lr
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.eval_task = eval_task
        self._outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images, self.eval_task)

    def training_step(self, batch, batch_index: int) -> torch.Tensor:
        images, labels, tasks = batch
        features = self.network.backbone(images)
        if len(self.network.heads) == 1:
            loss = F.cross_entropy(self.network.heads[0](features), labels)
        else:
            losses = []
            for task in torch.unique(tasks).tolist():
                own = tasks == task
                losses.append(F.cross_entropy(self.network.heads[task](features[own]), labels[own]))
            loss = torch.stack(losses).mean()
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(labels))
        return loss

    def validation_step(self, batch, batch_index: int) -> None:
        images, labels, _ = batch
        logits = self.network(images, self.eval_task)
        self._outputs.append((labels.detach().cpu(), logits.detach().float().cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._outputs:
            return
        labels = torch.cat([o[0] for o in self._outputs])
        logits = torch.cat([o[1] for o in self._outputs])
        self._outputs.clear()
        if self.trainer.world_size > 1:   # DDP: each process saw a share; all compute on the whole split
            with warnings.catch_warnings():   # Lightning's gather uses a call torch marks deprecated
                warnings.simplefilter("ignore")
                labels = cast(torch.Tensor, self.all_gather(labels.to(self.device))).reshape(-1).cpu()
                logits = cast(torch.Tensor, self.all_gather(logits.to(self.device))).reshape(-1, logits.shape[-1]).cpu()
        # One pass at the end of the epoch: loss and metrics over the whole held-out split.
        metrics = class_balanced_metrics(labels.numpy(), logits.softmax(dim=1).numpy())
        self.log("val_loss", F.cross_entropy(logits, labels).item())
        self.log("val_balanced_accuracy", metrics["balanced_accuracy"])
        if np.isfinite(metrics["auroc"]):
            self.log("val_auroc", metrics["auroc"])

    def configure_optimizers(self):
        optimiser = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, self.epochs))
        return {"optimizer": optimiser, "lr_scheduler": schedule}
