"""MLflow run-context provider (entry point ``mlflow.run_context_provider: tfp``): ``tfp.version`` and the cloud's
``tfp.spec_id`` on every run started while tfp works on a cloud."""
from __future__ import annotations

from mlflow.tracking.context.abstract_context import RunContextProvider

from tfp_mlflow import __version__
from tfp_mlflow.cloud.context import current_cloud
from tfp_mlflow.cloud.schema import Tag

__all__ = ["TfpRunContext"]


class TfpRunContext(RunContextProvider):
    """``tfp.version`` and the cloud's ``tfp.spec_id`` on every run started while tfp works on a cloud."""

    def in_context(self) -> bool:
        return current_cloud() is not None

    def tags(self) -> dict[str, str]:
        _, spec_id = current_cloud() or ("", "")
        return {Tag.TFP_VERSION: __version__, **({Tag.SPEC_ID: spec_id} if spec_id else {})}
