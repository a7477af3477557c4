"""Training (torch side): the baseline and the four transfer scenarios on PyTorch Lightning, logged to MLflow.

images → :mod:`~tfp_mlflow.train.data` → :mod:`~tfp_mlflow.train.network` → :mod:`~tfp_mlflow.train.module`
→ :func:`~tfp_mlflow.train.run.train` → an MLflow run and, with ``contribute``, knowledge in the cloud.
"""
from tfp_mlflow.train.config import (
                                     DEFAULT_ARCHITECTURE,
                                     TRAIN_SCENARIOS,
                                     TrainConfig,
                                     config_from_recommendation,
                                     resolve_source,
)
from tfp_mlflow.train.run import TrainResult, contribute_outcome, train

__all__ = ["TrainConfig", "TrainResult", "train", "config_from_recommendation", "resolve_source",
           "contribute_outcome", "TRAIN_SCENARIOS", "DEFAULT_ARCHITECTURE"]
