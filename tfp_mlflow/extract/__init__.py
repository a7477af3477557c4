"""The torch side: datasets, frozen backbones and the streaming fingerprint pipeline.

Importing this package imports torch; the recommender core does not.
"""
from tfp_mlflow.extract.backbones import (
                                          DEFAULT_BACKBONE,
                                          Backbone,
                                          list_offline_backbones,
                                          load_backbone,
                                          register_offline_weights,
)
from tfp_mlflow.extract.datasets import ImageDataset, load_image, open_dataset
from tfp_mlflow.extract.pipeline import Draws, create_spec, fingerprint_dataset, plan_draws

__all__ = ["Backbone", "DEFAULT_BACKBONE", "load_backbone", "list_offline_backbones", "register_offline_weights",
           "ImageDataset", "open_dataset", "load_image", "fingerprint_dataset", "Draws", "create_spec",
           "plan_draws"]
