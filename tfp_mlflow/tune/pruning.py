"""Optuna pruning for `pytorch_lightning` trainers.

optuna-integration's callback imports the ``lightning`` package; this project uses ``pytorch_lightning``
(setup.cfg's torch extra), so the same few lines live here: report the held-out score each epoch, stop when pruned.
"""
from __future__ import annotations

import optuna
import pytorch_lightning as pl

__all__ = ["PruningCallback"]


class PruningCallback(pl.Callback):
    """Reports ``monitor`` to the trial after each validation and raises :class:`optuna.TrialPruned` when told."""

    def __init__(self, trial: optuna.Trial, monitor: str = "val_balanced_accuracy") -> None:
        self.trial = trial
        self.monitor = monitor

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        epoch = module.current_epoch
        self.trial.report(float(trainer.callback_metrics[self.monitor]), step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")
