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


class _Received(Exception):
    pass


@pytest.mark.parametrize("field, value", [("selector", "manual"), ("top_k", 7), ("scenarios", ("architecture",
                         "pretraining")), ("metric", "auroc"), ("trusted", "alice,bob"), ("include_flagged", True),
                         ("merge", None), ("merge", "interleave"), ("order_by", "distance")])
def test_the_server_path_carries_every_query_option_alone(monkeypatch, field, value):
    """Client to REST parameters to the server's query: each field, changed alone, arrives as it was sent."""
    pytest.importorskip("tfp_mlflow_plugins")
    from tfp_mlflow import remote
    from tfp_mlflow.workflows import recommending
    from tfp_mlflow_plugins import service

    assert {f.name for f in fields(QueryOptions)} >= {field}
    sent: dict = {}
    monkeypatch.setattr(remote, "recommend_on_server", lambda url, body, **params: sent.update(params))
    query = QueryOptions(**{field: value})
    assert recommending._on_server("http://127.0.0.1:1", None, query, keywords=["x-ray"], name="q", log=False) is None

    def received(target, cloud, *, query, **_):
        raise _Received(query)

    monkeypatch.setattr(service, "recommend_for", received)
    params = {k: v for k, v in sent.items() if v is not None and v != ""}
    with pytest.raises(_Received) as arrived:
        service.recommend_upload(None, b"", **params)
    assert arrived.value.args[0] == query


def test_a_tracking_server_cloud_ranks_on_the_server_by_default_and_here_with_local(monkeypatch, tmp_path):
    from tfp_mlflow.workflows import recommending

    asked = []

    def on_server(server, target, query, **kwargs):
        asked.append(server)
        raise _Received(server)

    monkeypatch.setattr(recommending, "_on_server", on_server)
    monkeypatch.setattr(recommending, "plan_query", lambda cloud, selector, words, has_target: (selector, None))
    with pytest.raises(_Received):
        recommend_for(None, "http://127.0.0.1:9", query=QueryOptions(selector="manual"), keywords="x-ray", log=False)
    assert asked == ["http://127.0.0.1:9"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://cloud.example:5000")
    with pytest.raises(_Received):
        recommend_for(None, None, query=QueryOptions(selector="manual"), keywords="x-ray", log=False)
    assert asked[-1] == "https://cloud.example:5000"
    monkeypatch.setattr(recommending, "recommend", lambda *a, **k: (_ for _ in ()).throw(_Received("here")))
    with pytest.raises(_Received, match="here"):
        recommend_for(None, "http://127.0.0.1:9", query=QueryOptions(selector="manual"), keywords="x-ray",
                      log=False, local=True)
    assert len(asked) == 2
