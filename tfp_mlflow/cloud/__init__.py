"""The knowledge cloud on MLflow: schema (names), store (reads and writes), cache (local copies). Torch-free."""
from tfp_mlflow.cloud.schema import CLOUD_EXPERIMENT, RECOMMENDATION_EXPERIMENT, SCENARIOS, KnowledgeKind
from tfp_mlflow.cloud.knowledge import Knowledge, KnowledgeRow
from tfp_mlflow.cloud.store import Cloud, CloudTask, default_tracking_uri

__all__ = ["Cloud", "CloudTask", "Knowledge", "KnowledgeRow", "KnowledgeKind", "default_tracking_uri",
           "CLOUD_EXPERIMENT", "RECOMMENDATION_EXPERIMENT", "SCENARIOS"]
