"""The knowledge cloud on MLflow: the storage interface (base), schema (names), store (reads and writes), recorder
(writing one run), cache (local copies). The only tfp package that imports MLflow. Torch-free."""
from tfp_mlflow.cloud.base import KnowledgeStore
from tfp_mlflow.cloud.knowledge import Knowledge, KnowledgeRow
from tfp_mlflow.cloud.recorder import RunRecorder, StoredRun
from tfp_mlflow.cloud.schema import CLOUD_EXPERIMENT, RECOMMENDATION_EXPERIMENT, KnowledgeKind
from tfp_mlflow.cloud.store import Cloud, CloudTask, default_tracking_uri, open_cloud

__all__ = ["open_cloud", "Cloud", "CloudTask", "Knowledge", "KnowledgeRow", "KnowledgeKind", "KnowledgeStore",
           "RunRecorder",
           "StoredRun", "default_tracking_uri", "CLOUD_EXPERIMENT", "RECOMMENDATION_EXPERIMENT"]
