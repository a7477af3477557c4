"""A Lightning callback that logs a task fingerprint and the measured result next to a training's MLflow run.

    from tfp_mlflow.lightning import TaskCallback

    mlflow.pytorch.autolog()                       # or Trainer(logger=MLFlowLogger(...))
    trainer = Trainer(callbacks=[TaskCallback("data/derm/train", name="derm", monitor="val_bacc")])
    trainer.fit(model, train_loader, val_loader)

At the start of fitting it fingerprints the training data (:func:`tfp_mlflow.log_task`: the same backbone, spec and
draws as ``tfp fingerprint``); at the end it records the monitored validation metric with the validation set's size
and the model's architecture (:func:`tfp_mlflow.log_result`). The run is the ``MLFlowLogger``'s when the trainer has
one, else the active MLflow run (``mlflow.pytorch.autolog()`` starts one). Imports torch and Lightning.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

try:
    from lightning.pytorch import Callback
    from lightning.pytorch.loggers import MLFlowLogger
except ImportError:   # the standalone package
    from pytorch_lightning import Callback
    from pytorch_lightning.loggers import MLFlowLogger

from tfp_mlflow.errors import BadInputError

if TYPE_CHECKING:
    from tfp_mlflow.workflows.own_runs import TrackedTask

__all__ = ["TaskCallback"]

#: Attributes and hyperparameters that name a LightningModule's architecture.
ARCHITECTURE_NAMES = ("architecture", "model_name", "arch", "backbone", "timm_model")


class TaskCallback(Callback):
    """Fingerprint the training data when fitting starts; record the result when it ends.

    Parameters
    ----------
    data : optional
        What :func:`tfp_mlflow.log_task` reads; default: the trainer's training ``DataLoader`` (its dataset must be
        over image files, e.g. torchvision's ``ImageFolder``).
    name, keywords, samples, contribute, recommend
        As :func:`tfp_mlflow.log_task`.
    monitor : str
        The logged validation metric to record (balanced accuracy in [0, 1], or AUROC with ``metric="auroc"``).
    metric : str
        ``balanced_accuracy`` or ``auroc``: what ``monitor`` measures.
    architecture, pretrained, cotraining, policy
        As :func:`tfp_mlflow.log_result`; ``architecture`` defaults to the module's ``architecture`` /
        ``model_name`` / ``backbone`` (attribute or hyperparameter).
    """

    def __init__(self, data: Any = None, *, name: str | None = None, keywords: Sequence[str] = (),
                 samples: int | None = None, monitor: str = "val_balanced_accuracy",
                 metric: str = "balanced_accuracy", architecture: str = "", pretrained: str = "",
                 cotraining: str = "", policy: Any = None, contribute: Any = None, recommend: Any = None) -> None:
        if metric not in ("balanced_accuracy", "auroc"):
            raise BadInputError(f"metric must be balanced_accuracy or auroc, got {metric!r}")
        self.data, self.name, self.keywords, self.samples = data, name, tuple(keywords), samples
        self.monitor, self.metric = monitor, metric
        self.architecture, self.pretrained, self.cotraining, self.policy = architecture, pretrained, cotraining, policy
        self.contribute, self.recommend = contribute, recommend
        self.task: TrackedTask | None = None

    def _where(self, trainer) -> dict[str, Any]:
        """The run to log into: the trainer's MLFlowLogger's, else the active MLflow run."""
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                return {"run_id": logger.run_id, "tracking_uri": logger.experiment.tracking_uri}
        return {}

    def on_fit_start(self, trainer, pl_module) -> None:
        from tfp_mlflow.workflows.own_runs import log_task

        if trainer.global_rank != 0:
            return
        data = self.data if self.data is not None else _train_loader(trainer)
        self.task = log_task(data, name=self.name, keywords=self.keywords, samples=self.samples,
                             contribute=self.contribute, recommend=self.recommend, **self._where(trainer))

    def on_fit_end(self, trainer, pl_module) -> None:
        from tfp_mlflow.workflows.own_runs import log_result

        if trainer.global_rank != 0 or self.task is None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            logged = ", ".join(sorted(trainer.callback_metrics)) or "none"
            raise BadInputError(f"metric {self.monitor!r} was never logged (logged: {logged}); set monitor=")
        measured = {"balanced_accuracy": None, "auroc": None, self.metric: float(value)}
        log_result(architecture=self.architecture or _architecture(pl_module), pretrained=self.pretrained,
                   cotraining=self.cotraining, policy=self.policy, held_out=_held_out(trainer),
                   contribute=self.contribute, run_id=self.task.run_id, balanced_accuracy=measured["balanced_accuracy"],
                   auroc=measured["auroc"], tracking_uri=self._where(trainer).get("tracking_uri"))


def _train_loader(trainer):
    loader = getattr(trainer, "train_dataloader", None)
    if loader is None:
        trainer.fit_loop.setup_data()
        loader = trainer.train_dataloader
    return loader


def _architecture(module) -> str:
    hparams = getattr(module, "hparams", {}) or {}
    for name in ARCHITECTURE_NAMES:
        value = getattr(module, name, None) or hparams.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def _held_out(trainer) -> int | None:
    """The validation set's size, when its loader has a sized dataset."""
    loaders = trainer.val_dataloaders
    loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
    try:
        return sum(len(loader.dataset) for loader in loaders if loader is not None) or None
    except TypeError:
        return None
