"""MLflow request-header provider (entry point ``mlflow.request_header_provider: tfp``): inside the server's
``/tfp/`` routes, MLflow requests carry the caller's own ``Authorization`` header, so MLflow's permissions decide
what each user sees."""
from __future__ import annotations

from mlflow.tracking.request_header.abstract_request_header_provider import RequestHeaderProvider

from tfp_mlflow.cloud.context import current_authorization

__all__ = ["ForwardedCredentials"]


class ForwardedCredentials(RequestHeaderProvider):
    """Adds the caller's ``Authorization`` header inside the server's ``/tfp/`` routes; inactive elsewhere."""

    def in_context(self) -> bool:
        return bool(current_authorization())

    def request_headers(self) -> dict[str, str]:
        return {"Authorization": current_authorization() or ""}
