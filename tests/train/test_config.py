"""A training configuration is checked before any data or weights are read, in one line per problem; a
recommendation becomes a configuration with its provenance."""
from __future__ import annotations

import json

import pytest

from tfp_mlflow.errors import BadInputError
from tfp_mlflow.train.config import TrainConfig, config_from_recommendation

pytestmark = pytest.mark.torch   # the train package imports torch


@pytest.mark.parametrize("changes, message", [
    ({"scenario": "finetune"}, "unknown scenario 'finetune'"),
    ({"epochs": 0}, "--epochs must be at least 1"),
    ({"image_size": 8}, "--image-size must be at least 16"),
    ({"lr": 0.0}, "--lr must be positive"),
    ({"scenario": "augmentation"}, "needs a policy"),
    ({"scenario": "pretraining", "source": "a"}, "needs source data"),
    ({"precision": "fp8"}, "not one Lightning takes"),
    ({"devices": "two"}, "give a count"),
    ({"num_nodes": 0}, "--num-nodes must be at least 1"),
    ({"weights": "w.safetensors", "from_scratch": True}, "contradict"),
])
def test_a_bad_setting_is_refused_in_one_line(changes, message):
    with pytest.raises(BadInputError, match=message) as info:
        TrainConfig(target="data", **changes).validate()
    assert "\n" not in str(info.value)


def test_params_are_short_strings_and_devices_reach_lightning_as_it_takes_them():
    config = TrainConfig(target="/data/fundus_1", shrink=800, devices="0,1").validate()
    params = config.params()
    assert params["name"] == params["target"] == "fundus_1"
    assert params["shrink"] == "800" and params["device"] == "" and all(isinstance(v, str) for v in params.values())
    assert config.lightning_devices() == [0, 1] and TrainConfig(target="x", devices="2").lightning_devices() == 2


def _recommendation(tmp_path):
    data = tmp_path / "source_data"
    data.mkdir()
    answer = {"schema": "tfp.recommendation/1", "selector": "bkld-small-target", "run_id": "r1", "scenarios": {
        "architecture": {"items": [{"source": "a", "distance": 0.5, "rank": 1, "architecture": "resnet18"}]},
        "pretraining": {"items": [{"source": "b", "distance": 0.7, "rank": 1, "data_uri": str(data)}]}}}
    path = tmp_path / "rec.json"
    path.write_text(json.dumps(answer))
    return path, data


def test_a_recommendation_becomes_a_configuration_with_its_provenance(tmp_path):
    path, data = _recommendation(tmp_path)
    base = TrainConfig(target="target")
    arch = config_from_recommendation(path, "architecture", 1, base)
    assert (arch.scenario, arch.architecture, arch.source) == ("architecture", "resnet18", "a")
    assert arch.provenance == {"source": "a", "distance": 0.5, "rank": 1, "selector": "bkld-small-target",
                               "recommendation_run": "r1"}
    pre = config_from_recommendation(path, "pretraining", 1, base)
    assert pre.source_data == str(data) and pre.validate() is pre


@pytest.mark.parametrize("scenario, rank, message", [
    ("architecture", 2, r"--rank must lie in 1..1"),
    ("cotraining", 1, "no cotraining suggestion"),
    ("baseline", 1, "a baseline takes nothing"),
])
def test_a_recommendation_that_cannot_serve_is_one_line(tmp_path, scenario, rank, message):
    path, _ = _recommendation(tmp_path)
    with pytest.raises(BadInputError, match=message):
        config_from_recommendation(path, scenario, rank, TrainConfig(target="target"))
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(BadInputError, match="not a tfp recommendation"):
        config_from_recommendation(tmp_path / "other.json", "architecture", 1, TrainConfig(target="target"))
