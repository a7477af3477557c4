"""Scoring task selectors against measured transfer outcomes (docs/method.md §6). Torch-free."""
from tfp_mlflow.evaluation.meta_metrics import META_METRICS, WIN_RATE_METRICS, affinities_from_distances
from tfp_mlflow.evaluation.protocol import Evaluation, bootstrap_ranking, evaluate

__all__ = ["META_METRICS", "WIN_RATE_METRICS", "Evaluation", "evaluate", "bootstrap_ranking",
           "affinities_from_distances"]
