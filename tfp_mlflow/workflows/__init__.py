"""Workflows: multi-step jobs as Python functions, called by the CLI, the recipes and the server plugin.

* :func:`recommend_for`: a dataset or fingerprint → recommendations (fingerprinted with the cloud's spec);
* :func:`tune_for`: a warm-started Optuna study for a dataset;
* :func:`rank_models`: candidate backbones scored on a dataset's own labelled images;
* :func:`seed_cloud`: a starter cloud from public datasets (``tfp seed``);
* :func:`run_demo`: the whole loop on synthetic tasks (``tfp demo``).

Importing this package imports no torch; the functions that extract or train import it when called.
"""
from tfp_mlflow.workflows.models import rank_models
from tfp_mlflow.workflows.recommending import recommend_for
from tfp_mlflow.workflows.seeding import read_plan, seed_cloud
from tfp_mlflow.workflows.targets import target_fingerprint
from tfp_mlflow.workflows.tuning import default_storage, tune_for


def run_demo(*args, **kwargs):
    """``tfp demo`` as a function (see :func:`tfp_mlflow.demo.run.run_demo`)."""
    from tfp_mlflow.demo.run import run_demo as demo

    return demo(*args, **kwargs)


__all__ = ["recommend_for", "target_fingerprint", "tune_for", "default_storage", "rank_models", "run_demo",
           "seed_cloud", "read_plan"]
