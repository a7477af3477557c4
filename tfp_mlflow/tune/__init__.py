"""Tuning: Optuna studies over the search space, warm-started from recommendations, logged back to the cloud."""
from tfp_mlflow.tune.space import NO_POLICY, PAPER_ARCHITECTURES, SearchSpace, loadable_architectures
from tfp_mlflow.tune.study import StudyPlan, StudyResult, run_study
from tfp_mlflow.tune.warm_start import enqueue_warm_start, evidence_params, warm_start_suggestions

__all__ = ["SearchSpace", "PAPER_ARCHITECTURES", "NO_POLICY", "loadable_architectures", "StudyPlan", "StudyResult",
           "run_study", "warm_start_suggestions", "evidence_params", "enqueue_warm_start"]
