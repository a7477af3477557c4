"""The search space: defaults from the cloud, a file's keys checked in one line, suggestions, violations and
widening, with a real Optuna trial (in memory)."""
from __future__ import annotations

import optuna
import pytest

from tfp_mlflow.errors import BadInputError
from tfp_mlflow.tune.space import NO_POLICY, SearchSpace

DEFAULTS = {"default_architectures": ["tf_efficientnet_lite0", "resnet18"], "default_policies": ["p1", "p2"]}


def test_a_missing_file_takes_the_clouds_candidates():
    space = SearchSpace.load(None, **DEFAULTS)
    assert space.architectures == ("tf_efficientnet_lite0", "resnet18")
    assert space.policies == (NO_POLICY, "p1", "p2") and space.truncate == (None,) and space.epochs == (3,)


def test_a_file_overrides_what_it_names(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("architectures: [resnet18]\nlr: [0.001, 0.01]\ntruncate: [none, 2]\nepochs: 5\n")
    space = SearchSpace.load(path, **DEFAULTS)
    assert space.architectures == ("resnet18",) and space.lr == (0.001, 0.01)
    assert space.truncate == (None, 2) and space.epochs == (5,) and space.policies == (NO_POLICY, "p1", "p2")


@pytest.mark.parametrize("text, message", [
    ("archs: [resnet18]\n", "unknown key 'archs'"),
    ("lr: [0.1]\n", r"lr must be \[low, high\]"),
    ("lr: [0.1, 0.01]\n", "0 < low <= high"),
    ("epochs: 0\n", "epochs must be at least 1"),
    ("epochs: [2, many]\n", "epochs must be a whole number or a list of them"),
    ("image_size: [64, 8]\n", "image_size must be at least 16"),
    ("- a\n- b\n", "must be a mapping"),
    ("architectures: [\n", "does not parse"),
    ("policies: []\narchitectures: []\n", "no architecture"),
])
def test_a_bad_file_is_one_line_that_names_the_problem(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(BadInputError, match=message) as info:
        SearchSpace.load(path, **{**DEFAULTS, "default_architectures": []} if "architectures: []" in text
                         else DEFAULTS)
    assert "\n" not in str(info.value)


def test_suggestions_lie_inside_and_widening_holds_a_configuration_from_outside():
    space = SearchSpace.load(None, **DEFAULTS)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        params = space.suggest(study.ask())
        assert space.violations(params) == []
    outside = {"architecture": "convnext_tiny", "policy": "p9", "lr": 0.5, "weight_decay": 1e-8, "truncate": 3}
    assert len(space.violations(outside)) == 5
    wider = space.widened(outside)
    assert wider.violations(outside) == [] and set(space.architectures) < set(wider.architectures)
    assert wider.to_json()["lr"] == [1e-4, 0.5]


def test_epochs_and_image_size_with_several_values_are_searched_and_set_each_trials_budget(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("epochs: [4, 2]\nimage_size: [64, 32, 48]\n")
    space = SearchSpace.load(path, **DEFAULTS)
    assert space.epochs == (2, 4) and space.image_size == (32, 48, 64)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    drawn = [space.suggest(study.ask()) for _ in range(12)]
    assert {p["epochs"] for p in drawn} == {2, 4} and {p["image_size"] for p in drawn} == {32, 48, 64}
    assert all(space.settings(p) == {"epochs": p["epochs"], "image_size": p["image_size"]} for p in drawn)
    assert space.violations({**drawn[0], "epochs": 3}) == ["epochs 3 is not among [2, 4]"]
    assert space.widened({**drawn[0], "image_size": 96}).image_size == (32, 48, 64, 96)
    assert space.to_json()["epochs"] == [2, 4] and space.to_json()["image_size"] == [32, 48, 64]


def test_one_value_fixes_the_budget_and_is_not_drawn():
    space = SearchSpace(architectures=("resnet18",), epochs=5, image_size=(64,))
    params = space.suggest(optuna.create_study().ask())
    assert "epochs" not in params and "image_size" not in params
    assert space.settings(params) == {"epochs": 5, "image_size": 64}
    assert SearchSpace(architectures=("resnet18",)).settings(params) == {"epochs": 3}
