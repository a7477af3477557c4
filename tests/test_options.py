"""Options travel as one typed value: every field reaches the function that acts on it, with the same default."""
from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import fields

import pytest

from tfp_mlflow.errors import BadInputError
from tfp_mlflow.recommend import QueryOptions, recommend
from tfp_mlflow.testing.memory import memory_cloud
from tfp_mlflow.tune import StudyPlan, run_study
from tfp_mlflow.workflows import recommend_for


def test_every_query_option_is_a_parameter_of_recommend_with_the_same_default():
    parameters = inspect.signature(recommend).parameters
    for field in fields(QueryOptions):
        assert field.name in parameters, field.name
        assert parameters[field.name].default == field.default, field.name


def test_recommend_for_hands_every_query_option_on(tmp_path):
    cloud = memory_cloud(tmp_path / "cache")
    for name, contributor in (("near", "alice"), ("far", "bob")):
        cloud.contribute(None, name=name, keywords=["x-ray", "chest"], num_images=50, num_classes=2,
                         contributor=contributor)
    query = QueryOptions(selector="manual", top_k=1, scenarios=("architecture",), metric="auroc", trusted="alice",
                         include_flagged=True, merge=None, order_by="distance")
    result = recommend_for(None, cloud, query=query, keywords="x-ray,chest", log=False)
    assert (result.selector, result.top_k, result.metric, result.trusted) == ("manual", 1, "auroc", ["alice"])
    assert list(result.scenarios) == ["architecture"] and [r.source for r in result.ranking] == ["near"]
    assert any("outside --trusted" in note for note in result.notes)
    with pytest.raises(BadInputError, match="--top-k must be at least 1, got 0"):
        recommend_for(None, cloud, query=QueryOptions(selector="manual", top_k=0), keywords="x-ray")


def test_a_study_plan_is_checked_before_any_trial():
    assert "plan" in inspect.signature(run_study).parameters
    with pytest.raises(BadInputError, match="a study needs a name and an Optuna storage URL"):
        StudyPlan().check()
    with pytest.raises(BadInputError, match="--n-trials must be at least 1, got 0"):
        StudyPlan("s", "sqlite:///x.db", n_trials=0).check()
    with pytest.raises(BadInputError, match="--heartbeat must be at least 1 second"):
        StudyPlan("s", "sqlite:///x.db", heartbeat=0).check()


@pytest.mark.torch
def test_fingerprint_dataset_reads_every_draw_option():
    from tfp_mlflow.extract import Draws, fingerprint_dataset

    tree = ast.parse(textwrap.dedent(inspect.getsource(fingerprint_dataset)))
    read = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "draws"}
    assert read == {f.name for f in fields(Draws)}
