"""One training run end to end: data → network → Lightning → held-out metrics → MLflow run → knowledge in the cloud.

The run lives in the ``tfp-training`` experiment of the cloud's tracking server. It is tagged ``tfp.complete``
only after its metrics, figures and model are written; with ``contribute`` its outcome then becomes knowledge
of the target task (``tfp.evidence_run`` names the run), so the cloud grows with use.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, RichProgressBar

from tfp_mlflow._version import __version__
from tfp_mlflow.cloud.base import KnowledgeStore
from tfp_mlflow.cloud.knowledge import Knowledge, KnowledgeRow
from tfp_mlflow.cloud.schema import TRAINING_EXPERIMENT, Artifact, Kind, KnowledgeKind, Metric, Tag
from tfp_mlflow.cloud.store import Cloud, RunRecorder
from tfp_mlflow.errors import BadInputError, first_line
from tfp_mlflow.scenarios import BASELINE, get_scenario
from tfp_mlflow.train.config import TrainConfig
from tfp_mlflow.train.data import ImageClassificationData, TaskSplit, build_transforms, mixed_sampler, split_task
from tfp_mlflow.train.module import TransferModule, class_balanced_metrics
from tfp_mlflow.train.network import Network, build_network
from tfp_mlflow.train.scenarios import training_hook

__all__ = ["TrainResult", "train", "TaskModel"]

TRAIN_RESULT_SCHEMA = "tfp.training/1"


@dataclass
class TrainResult:
    """What a training run gave on the target's held-out split (metrics of the best epoch)."""

    run_id: str
    tracking_uri: str
    task: str
    scenario: str
    source: str
    architecture: str
    balanced_accuracy: float
    auroc: float | None
    best_epoch: int
    history: list[dict[str, float]]
    images_per_second: float
    knowledge_runs: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"schema": TRAIN_RESULT_SCHEMA, **asdict(self)}


class TaskModel(torch.nn.Module):
    """The logged model: images (n, 3, s, s), normalised as in training → logits (n, classes) of the target."""

    def __init__(self, network: Network, task: int = 0) -> None:
        super().__init__()
        self.backbone = network.backbone
        self.head = network.heads[task]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


def train(config: TrainConfig, *, tracking_uri: str | None = None, cloud: KnowledgeStore | None = None,
          contribute: bool = False, progress: bool = True, log_model: bool = True,
          experiment: str = TRAINING_EXPERIMENT, parent_run_id: str | None = None,
          callbacks: Sequence[pl.Callback] = (), on_run_start: Callable[[str], None] | None = None) -> TrainResult:
    """Train ``config`` on its target and log it as a run (see the module docstring).

    ``parent_run_id`` nests the run under another (a study's run, in the same ``experiment``); ``callbacks`` are
    added to the Lightning trainer of the target stage (a pruning callback); ``on_run_start(run_id)`` is called
    once the run exists, so a caller can refer to it even when training then fails.

    Everything that can be checked without training is checked first: the config, the datasets and their
    splits, the pretrained weights, the truncation point. Raises :class:`~tfp_mlflow.errors.TfpError` then.
    """
    config = config.validate()
    pl.seed_everything(config.seed, workers=True, verbose=False)  # before the heads are initialised
    target = split_task(config.target, seed=config.seed, val_fraction=config.val_fraction, shrink=config.shrink,
                        name=config.task_name, skip_unreadable=config.skip_unreadable)
    source = (split_task(config.source_data, seed=config.seed, val_fraction=config.val_fraction,
                         skip_unreadable=config.skip_unreadable)
              if config.source_data else None)
    hook = training_hook(config.scenario)
    network, weights_source, (mean, std) = build_network(config.architecture, hook.heads(target, source),
                                                         weights=config.weights, from_scratch=config.from_scratch,
                                                         truncate=config.truncate)
    cloud = cloud or Cloud(tracking_uri)
    tags = {Tag.TASK: target.name, Tag.SCENARIO: config.scenario, Tag.SOURCE: config.source,
            Tag.ARCHITECTURE: config.architecture, Tag.POLICY_ID: config.policy_id}
    # Under DDP every process runs this function; only rank zero records a run and contributes (Lightning's own
    # MLflow logger writes from rank zero too), so N GPUs give one run, not N.
    recording = (cloud.record(Kind.TRAINING, tags, experiment=experiment, parent_run_id=parent_run_id)
                 if is_rank_zero() else contextlib.nullcontext(_SilentRun()))
    with recording as run:
        if on_run_start is not None and run.run_id:
            on_run_start(run.run_id)
        _log_setup(run, config, target, source, weights_source)

        def stage(task: TaskSplit, cotrain: TaskSplit | None, *, prefix: str, pretraining: bool = False):
            return _fit(config, network, task, cotrain, mean, std, cloud.uri, run, prefix=prefix, progress=progress,
                        epochs=(config.pretrain_epochs or config.epochs) if pretraining else config.epochs,
                        callbacks=() if pretraining else callbacks)

        history, images_per_second = hook.fit(stage, network, target, source)
        result = _finish(config, network, target, mean, std, cloud.uri, run, history, images_per_second, log_model)
        if contribute and run.run_id:
            result.knowledge_runs = contribute_outcome(cloud, config, result, target)
            run.set_tags({Tag.KNOWLEDGE_RUNS: ",".join(result.knowledge_runs)})
    return result


def is_rank_zero() -> bool:
    """Whether this process is rank zero of its job: torchrun's ``RANK``, else SLURM's ``SLURM_PROCID``, else the
    ``NODE_RANK``/``LOCAL_RANK`` that Lightning's launcher gives the processes it starts (all absent: one process)."""
    for variable in ("RANK", "SLURM_PROCID"):
        if os.environ.get(variable, "").strip().isdigit():
            return int(os.environ[variable]) == 0
    return all(int(os.environ.get(v, "0") or 0) == 0 for v in ("NODE_RANK", "LOCAL_RANK"))


class _SilentRun:
    """The recorder of a process that is not rank zero: it records nothing."""

    run_id = ""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


#: What a training run writes to: rank zero's recorder, or the silence of the other ranks.
_Run = RunRecorder | _SilentRun


def _log_setup(run: _Run, config: TrainConfig, target: TaskSplit, source: TaskSplit | None,
               weights_source: str) -> None:
    params = {**config.params(), "weights_source": weights_source, "train_images": len(target.train),
              "val_images": len(target.val), "classes": ",".join(target.classes)[:500]}
    if source is not None:
        params.update(source_images=len(source.train), source_classes=len(source.classes))
    for key, value in config.provenance.items():
        params[f"recommendation_{key}"] = value
    run.log_params(params)
    if config.policy is not None:
        run.log_file(Artifact.TRAINING_POLICY, lambda p: p.write_text(json.dumps(config.policy, indent=1)))


def _loaders(config: TrainConfig, target: TaskSplit, cotrain: TaskSplit | None, mean, std):
    """Training loader (target, or target and source drawn with equal probability) and the held-out loader."""
    train_tf = build_transforms(config.image_size, mean, std, policy=config.policy, seed=config.seed)
    eval_tf = build_transforms(config.image_size, mean, std, train=False)
    parts = [ImageClassificationData(target.train, target.label_indices(target.train), train_tf,
                                     image_size=config.image_size)]
    if cotrain is not None:
        parts.append(ImageClassificationData(cotrain.train, cotrain.label_indices(cotrain.train), train_tf, task=1,
                                             image_size=config.image_size))
    common: dict[str, Any] = {"batch_size": config.batch_size, "num_workers": config.workers,
              "persistent_workers": config.workers > 0}
    if cotrain is None:
        generator = torch.Generator().manual_seed(config.seed)
        train_loader = torch.utils.data.DataLoader(parts[0], shuffle=True, generator=generator, **common)
    else:
        # Each draw picks a task with probability 1/2, then an image of it; an epoch sees 2 x the target's size.
        sampler = mixed_sampler([len(p) for p in parts], 2 * len(parts[0]), config.seed)
        train_loader = torch.utils.data.DataLoader(torch.utils.data.ConcatDataset(parts), sampler=sampler, **common)
    val = ImageClassificationData(target.val, target.label_indices(target.val), eval_tf, image_size=config.image_size)
    return train_loader, torch.utils.data.DataLoader(val, shuffle=False, **common)


class _History(pl.Callback):
    """Collects each epoch's aggregated metrics (train and held-out) and its wall time from the trainer."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self._started = 0.0

    def on_train_epoch_start(self, trainer, module) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        # The held-out pass has run by now, so the time covers training and validation of the epoch.
        self.rows.append({**{k: float(v) for k, v in trainer.callback_metrics.items()},
                          "epoch_seconds": time.perf_counter() - self._started})


class _EpochBar(RichProgressBar):
    """Lightning's rich bar counting epochs from 1, as the run's summary and metrics do ("Epoch 3/3", best epoch 3)."""

    def _get_train_description(self, current_epoch: int) -> str:
        last = self.trainer.max_epochs
        if last is None:                               # no epoch limit: Lightning's own wording
            return super()._get_train_description(current_epoch)
        return super()._get_train_description(current_epoch).replace(
            f"Epoch {current_epoch}/{last - 1}", f"Epoch {current_epoch + 1}/{last}")


class _PlainEpochs(pl.Callback):
    """Where output is not a terminal (a log file, CI, a cluster job): one line per epoch instead of a bar."""

    def __init__(self, label: str) -> None:
        self.label, self._started = label, time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        if not trainer.is_global_zero:
            return
        done, total = trainer.current_epoch + 1, trainer.max_epochs
        seconds = (time.perf_counter() - self._started) / done
        score = trainer.callback_metrics.get("val_balanced_accuracy")
        print(f"{self.label}: epoch {done}/{total}"
              + (f", held-out balanced accuracy {float(score):.3f}" if score is not None else "")
              + f", {seconds:.0f} s per epoch, about {seconds * (total - done):.0f} s left", flush=True)


def epoch_images_per_second(seconds: list[float], images: int) -> float:
    """Steady-state throughput: training images of one epoch over the median epoch time, the first (warm-up)
    epoch left out when there are more."""
    steady = seconds[1:] or seconds
    return images / float(np.median(steady)) if steady else 0.0


def _fit(config: TrainConfig, network: Network, task: TaskSplit, cotrain: TaskSplit | None, mean, std,
         tracking_uri: str, run: _Run, *, epochs: int, prefix: str, progress: bool,
         callbacks: Sequence[pl.Callback] = ()) -> tuple[list[dict[str, float]], float]:
    """Fit ``network`` on ``task``; keeps the best epoch's weights (by held-out balanced accuracy)."""
    from pytorch_lightning.loggers import MLFlowLogger

    train_loader, val_loader = _loaders(config, task, cotrain, mean, std)
    module = TransferModule(network, lr=config.lr, weight_decay=config.weight_decay, epochs=epochs)
    # Asynchronous: per-epoch metrics are written beside the next epoch instead of stalling it.
    logger = (MLFlowLogger(tracking_uri=tracking_uri, run_id=run.run_id, prefix=prefix, synchronous=False)
              if run.run_id else False)   # a rank other than zero logs nothing
    history = _History()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = ModelCheckpoint(dirpath=tmp, filename="best", monitor="val_balanced_accuracy", mode="max",
                                     save_weights_only=True)
        bar = (_EpochBar() if sys.stdout.isatty() else _PlainEpochs(f"{task.name} {prefix or 'train'}")) \
            if progress else None
        callbacks = [checkpoint, history, *callbacks] + ([bar] if bar else [])
        with _quiet():
            trainer = _trainer(config, max_epochs=epochs, logger=logger, callbacks=callbacks,
                               enable_progress_bar=isinstance(bar, _EpochBar), enable_model_summary=False,
                               num_sanity_val_steps=0, log_every_n_steps=1, deterministic="warn",
                               accelerator=_accelerator(config.device), default_root_dir=tmp)
            if config.find_lr and not prefix:
                _find_lr(trainer, module, train_loader, val_loader, run)
            trainer.fit(module, train_loader, val_loader)
        run.flush()  # every epoch's metrics are in the store before the run can complete
        state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    images_per_second = epoch_images_per_second([row["epoch_seconds"] for row in history.rows],
                                                len(train_loader.sampler))
    return history.rows, images_per_second


def _find_lr(trainer, module: TransferModule, train_loader, val_loader, run: _Run) -> None:
    """Lightning's learning-rate finder (the paper's per-task tuning); the suggestion replaces ``lr``."""
    from pytorch_lightning.tuner import Tuner

    finder = Tuner(trainer).lr_find(module, train_loader, val_loader, attr_name="lr",
                                    num_training=min(100, 10 * len(train_loader)))
    suggestion = finder.suggestion() if finder is not None else None
    if suggestion:
        module.lr = float(suggestion)
        run.log_params({"lr_found": f"{suggestion:.3g}"})


def _trainer(config, **kwargs):
    """Lightning's Trainer with the config's precision, devices, nodes and strategy passed through as they are (its
    MLflow logger writes from rank zero only); what Lightning refuses is said in one line."""
    try:
        return pl.Trainer(precision=config.precision, devices=config.lightning_devices(), num_nodes=config.num_nodes,
                          strategy=config.strategy, **kwargs)
    except Exception as exc:   # MisconfigurationException, ValueError: a combination this machine cannot run
        raise BadInputError(f"Lightning cannot train with precision={config.precision}, devices={config.devices}, "
                            f"num_nodes={config.num_nodes}, strategy={config.strategy} here: "
                            f"{first_line(exc, 200) or type(exc).__name__}") from None


def _accelerator(device: str | None) -> str:
    if device is None:
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "gpu" if device.startswith("cuda") else "cpu"


@contextlib.contextmanager
def _quiet():
    """Silences Lightning's tips and the warnings about worker counts that do not apply to small tasks."""
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric",
                                                    "torch._export", "torch.export")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for pattern in (".*does not have many workers.*", ".*number of training batches.*", ".*LeafSpec.*",
                        ".*deterministic.*", ".*treespec.*"):
            warnings.filterwarnings("ignore", message=pattern)
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


@torch.inference_mode()
def _predict(network: Network, loader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    network.eval().to(device)
    labels, probabilities = [], []
    for images, batch_labels, _ in loader:
        probabilities.append(network(images.to(device), 0).float().softmax(dim=1).cpu())
        labels.append(batch_labels)
    return torch.cat(labels).numpy(), torch.cat(probabilities).numpy()


def _finish(config: TrainConfig, network: Network, target: TaskSplit, mean, std, tracking_uri: str, run: _Run,
            history: list[dict[str, float]], images_per_second: float, log_model: bool) -> TrainResult:
    """Held-out metrics of the best epoch, figures, the model and the result JSON, all into the run."""
    from sklearn.metrics import confusion_matrix

    from tfp_mlflow.plots import plot_confusion_matrix, plot_learning_curves

    _, val_loader = _loaders(config, target, None, mean, std)
    device = torch.device("cuda" if _accelerator(config.device) == "gpu" else "cpu")
    labels, probabilities = _predict(network, val_loader, device)
    metrics = class_balanced_metrics(labels, probabilities)
    scores = [row.get("val_balanced_accuracy", -1.0) for row in history]
    result = TrainResult(run_id=run.run_id, tracking_uri=tracking_uri, task=target.name, scenario=config.scenario,
                         source=config.source, architecture=config.architecture,
                         balanced_accuracy=metrics["balanced_accuracy"],
                         auroc=metrics["auroc"] if np.isfinite(metrics["auroc"]) else None,
                         best_epoch=int(np.argmax(scores)) + 1 if scores else 0, history=history,
                         images_per_second=float(images_per_second))
    run.log_metrics({key: getattr(result, key) for key in (Metric.BALANCED_ACCURACY, Metric.AUROC, Metric.BEST_EPOCH,
                                                           Metric.IMAGES_PER_SECOND)})
    matrix = confusion_matrix(labels, probabilities.argmax(axis=1), labels=np.arange(len(target.classes)))
    title = f"{target.name}: {config.scenario}" + (f" from {config.source}" if config.source else "")
    run.log_file(Artifact.CONFUSION_MATRIX,
                 lambda p: plot_confusion_matrix(matrix, list(target.classes), p, title=title))
    run.log_file(Artifact.LEARNING_CURVES, lambda p: plot_learning_curves(history, p, title=title))
    if log_model:
        _log_model(run, TaskModel(network).eval().cpu(), config.image_size)
    run.log_file(Artifact.TRAINING_RESULT, lambda p: p.write_text(json.dumps(result.to_json(), indent=1)))
    return result


def _log_model(run: _Run, model: TaskModel, image_size: int) -> None:
    """The target's model in MLflow's pytorch flavour, saved with torch.export (pt2: loading runs no pickle)."""
    import timm


    # A batch of 2 keeps the exported graph's batch dimension dynamic (a batch of 1 would be specialised).
    example = np.zeros((2, 3, image_size, image_size), dtype=np.float32)
    with _quiet():
        run.log_model(model, name=Artifact.MODEL, input_example=example,
                      pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"timm=={timm.__version__}",
                                        f"tfp-mlflow=={__version__}"])


def contribute_outcome(cloud: KnowledgeStore, config: TrainConfig, result: TrainResult, target: TaskSplit) -> list[str]:
    """Add the run's outcome to the cloud as knowledge of the target (registering the task by name if new)."""
    row: dict[str, Any] = {"balanced_accuracy": result.balanced_accuracy, "auroc": result.auroc,
                           "evidence_run": result.run_id, "repetition": config.seed, "held_out": len(target.val)}
    provenance = f"tfp train {config.scenario}, run {result.run_id}, seed {config.seed}"
    items: list[Knowledge] = []
    plain_architecture = config.truncate is None and config.scenario in (BASELINE, "architecture")
    if plain_architecture:
        items.append(Knowledge(result.task, KnowledgeKind.ARCHITECTURE,
                               (KnowledgeRow(architecture=config.architecture, **row),), provenance=provenance))
    if config.scenario == BASELINE:
        items.append(Knowledge(result.task, KnowledgeKind.BASELINE,
                               (KnowledgeRow(architecture=config.architecture, **row),), provenance=provenance))
    if config.scenario != BASELINE and config.source:
        items.append(Knowledge(result.task, get_scenario(config.scenario).outcome,
                               (KnowledgeRow(architecture=config.architecture, source=config.source,
                                             policy_id=config.policy_id, **row),), provenance=provenance))
    if not items:
        return []
    if cloud.task(result.task) is None:
        cloud.contribute(None, name=result.task, num_images=len(target.train) + len(target.val),
                         num_classes=len(target.classes))
    return [cloud.add_knowledge(item) for item in items]
