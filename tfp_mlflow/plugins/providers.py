"""MLflow's run-context and request-header providers for tfp (entry points in ``setup.cfg``)."""
from __future__ import annotations

from mlflow.tracking.context.abstract_context import RunContextProvider
from mlflow.tracking.request_header.abstract_request_header_provider import RequestHeaderProvider

from tfp_mlflow._version import __version__
from tfp_mlflow.cloud.schema import Tag
from tfp_mlflow.cloud.context import current_authorization, current_cloud

__all__ = ["TfpRunContext", "ForwardedCredentials"]


class TfpRunContext(RunContextProvider):
    """``tfp.version`` and the cloud's ``tfp.spec_id`` on every run started while tfp works on a cloud."""

    def in_context(self) -> bool:
        return current_cloud() is not None

    def tags(self) -> dict[str, str]:
        _, spec_id = current_cloud() or ("", "")
        return {Tag.TFP_VERSION: __version__, **({Tag.SPEC_ID: spec_id} if spec_id else {})}


class ForwardedCredentials(RequestHeaderProvider):
    """Adds the caller's ``Authorization`` header inside the server's ``/tfp/`` routes; inactive elsewhere."""

    def in_context(self) -> bool:
        return bool(current_authorization())

    def request_headers(self) -> dict[str, str]:
        return {"Authorization": current_authorization() or ""}
