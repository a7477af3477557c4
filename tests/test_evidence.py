"""Recommendations ordered by the sources' measured track record on a real SQLite cloud, with their reasons."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tfp_mlflow.cloud import Cloud
from tfp_mlflow.cloud.knowledge import Knowledge, KnowledgeRow
from tfp_mlflow.cloud.schema import KnowledgeKind
from tfp_mlflow.recommend import recommend
from tfp_mlflow.testing.stores import sqlite_uri

SOURCES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
#: How well each task's data helps others when co-trained: hotel best, alpha worst (alpha is the closest by keywords).
QUALITY = dict(zip(SOURCES, np.linspace(0.55, 0.9, len(SOURCES))))


def _cloud(tmp_path, target_outcomes: dict[str, float] | None = None,
           quality: dict[str, float] | None = None) -> Cloud:
    quality = quality or QUALITY
    cloud = Cloud(sqlite_uri(tmp_path / 'mlflow.db'), cache_dir=tmp_path / "cache")
    rng = np.random.default_rng(0)
    for position, name in enumerate(SOURCES):
        rows = [KnowledgeRow(source=s, repetition=0, balanced_accuracy=round(quality[s] - 0.02 * rng.random(), 4))
                for s in SOURCES if s != name]
        if target_outcomes is not None and name == "alpha":   # the task that will be the query
            rows = [KnowledgeRow(source=s, repetition=0, balanced_accuracy=v) for s, v in target_outcomes.items()]
        knowledge = [Knowledge(name, KnowledgeKind.BASELINE, (KnowledgeRow(repetition=0, balanced_accuracy=0.7),)),
                     Knowledge(name, KnowledgeKind.COTRAINING, tuple(rows))]
        keywords = ["x-ray", "chest"] if position < 2 else ["x-ray", f"k{position}"]
        cloud.contribute(None, name=name, keywords=keywords, num_images=100 + position, num_classes=2,
                         data_uri=f"file:///data/{name}", shareable=True, knowledge=knowledge)
    return cloud


@pytest.mark.slow
def test_recommendations_follow_the_track_record_and_say_why(tmp_path):
    cloud = _cloud(tmp_path / "a")
    result = recommend(cloud, keywords=["x-ray", "chest"], name="new", selector="manual", log=False,
                       scenarios=["cotraining"])
    block = result.scenarios["cotraining"]
    assert block.ordered_by == "track-record" and block.rule["inner_targets"] == len(SOURCES)
    first = block.items[0]
    assert first.source == "hotel"                             # the best record, far down by distance
    reasons = first.reasons
    assert reasons["distance_rank"] > 2
    assert reasons["track_record"]["tried"] == len(SOURCES) - 1
    assert reasons["track_record"]["improved"] == len(SOURCES) - 1 and reasons["track_record"]["median_gain"] > 0.1
    assert first.contributor
    by_distance = recommend(cloud, keywords=["x-ray", "chest"], name="new", selector="manual", log=False,
                            scenarios=["cotraining"], order_by="distance")
    assert by_distance.scenarios["cotraining"].ordered_by == "distance"
    assert by_distance.suggestions("cotraining")[0].source in ("alpha", "bravo")
    assert "track_record" in by_distance.suggestions("cotraining")[0].reasons


@pytest.mark.slow
def test_when_no_source_measurably_helped_the_answer_says_so_first_and_lists_the_nearest(tmp_path):
    # Every source ends within a point of the 0.7 baseline: records still differ, gains do not.
    flat = dict(zip(SOURCES, np.linspace(0.70, 0.715, len(SOURCES))))
    result = recommend(_cloud(tmp_path, quality=flat), keywords=["x-ray", "chest"], name="new", selector="manual",
                       log=False, scenarios=["cotraining"])
    block = result.scenarios["cotraining"]
    assert block.notes[0].startswith("no source within reach has shown a measurable cotraining gain")
    assert block.ordered_by == "distance"
    ranks = [i.reasons["distance_rank"] for i in block.items]
    assert ranks == sorted(ranks) and ranks[0] == 1
    assert all(i.reasons["track_record"]["evidence"] in ("no measurable effect", "loss") for i in block.items)
    helped = recommend(_cloud(tmp_path / "helped"), keywords=["x-ray", "chest"], name="new", selector="manual",
                       log=False, scenarios=["cotraining"])
    assert not helped.scenarios["cotraining"].notes[0].startswith("no source within reach")


@pytest.mark.slow
def test_the_querys_own_outcomes_never_move_its_recommendation(tmp_path):
    rng = np.random.default_rng(5)
    orders = []
    for attempt in range(2):
        shaken = {s: round(float(rng.random()), 4) for s in SOURCES if s != "alpha"}
        cloud = _cloud(tmp_path / str(attempt), target_outcomes=shaken)
        result = recommend(cloud, keywords=["x-ray", "chest"], name="alpha", selector="manual", log=False,
                           scenarios=["cotraining"], top_k=5)
        orders.append([(i.source, i.reasons.get("score")) for i in result.suggestions("cotraining")])
    assert orders[0] == orders[1]


@pytest.mark.slow
def test_a_cloud_without_outcomes_says_so_and_orders_by_distance(tmp_path):
    cloud = Cloud(sqlite_uri(tmp_path / 'mlflow.db'), cache_dir=tmp_path / "cache")
    for name in ("one", "two"):
        cloud.contribute(None, name=name, keywords=["x-ray"], num_images=10, num_classes=2,
                         data_uri=f"file:///{name}", shareable=True)
    result = recommend(cloud, keywords=["x-ray"], name="new", selector="manual", log=False, scenarios=["cotraining"])
    assert result.scenarios["cotraining"].ordered_by == "distance"
    assert any("no measured transfer outcomes" in note for note in result.notes)


@pytest.mark.slow
def test_the_task_view_shows_a_sources_track_record(tmp_path):
    from tfp_mlflow_plugins.service import task_detail

    detail = task_detail(_cloud(tmp_path), "hotel")
    record = detail["track_record"]["cotraining"]
    assert record["tried"] == len(SOURCES) - 1 and record["improved"] == len(SOURCES) - 1
    # Seven targets, each gaining about 0.2 over its baseline with little spread: large against its uncertainty.
    assert record["evidence"] == "strong" and record["interval"][0] > 0.1 and record["mean_gain"] > 0.1


def _outcomes_by(cloud: Cloud, writer: str, source: str, targets: list[str], value: float = 0.99) -> None:
    for target in targets:
        cloud.add_knowledge(Knowledge(target, KnowledgeKind.COTRAINING,
                                      (KnowledgeRow(source=source, repetition=0, balanced_accuracy=value),)),
                            contributor=writer)


@pytest.mark.slow
def test_outcomes_about_another_accounts_task_are_not_its_evidence_unless_its_owner_names_them(tmp_path):
    cloud = _cloud(tmp_path)
    owner = cloud.task("alpha").contributor
    cloud.contribute(None, name="mallory_src", keywords=["x-ray", "k9"], num_images=100, num_classes=2,
                     data_uri="file:///data/m", shareable=True, contributor="mallory")
    _outcomes_by(cloud, "mallory", "mallory_src", SOURCES)     # a little above everyone, on every honest target
    query = {"keywords": ["x-ray", "chest"], "name": "new", "selector": "manual", "log": False,
             "scenarios": ["cotraining"]}
    block = recommend(cloud, **query).scenarios["cotraining"]
    assert block.items[0].source == "hotel"                   # the honest record still orders it
    answer = recommend(cloud, **query, top_k=10)
    record = next(i.reasons["track_record"] for i in answer.scenarios["cotraining"].items if i.source == "mallory_src")
    assert record["tried"] == 0                               # none of mallory's tables about others' tasks counts
    assert any(n.startswith(f"{len(SOURCES)} outcome or baseline tables were not counted") for n in answer.notes)
    # The honest path it resembles: the owner of alpha names mallory as measuring it; that one table now counts.
    cloud.contribute(None, name="alpha", measured_by=["mallory"], contributor=owner)
    named = recommend(cloud, **query, top_k=10).scenarios["cotraining"]
    record = next(i.reasons["track_record"] for i in named.items if i.source == "mallory_src")
    assert record["tried"] == 1
    assert cloud.task("alpha").measured_by == ("mallory",)


@pytest.mark.slow
def test_one_accounts_evidence_about_its_own_sources_is_bounded_unless_trusted(tmp_path, monkeypatch):
    from tfp_mlflow.evidence import SELF_DEALT_TARGETS

    cloud = _cloud(tmp_path)
    own = [f"m{i}" for i in range(10)]
    for name in ["m_src", *own]:
        cloud.contribute(None, name=name, keywords=["x-ray", "chest"], num_images=100, num_classes=2,
                         data_uri=f"file:///data/{name}", shareable=True, contributor="mallory",
                         knowledge=[Knowledge(name, KnowledgeKind.BASELINE,
                                              (KnowledgeRow(repetition=0, balanced_accuracy=0.5),))])
    _outcomes_by(cloud, "mallory", "m_src", own)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "reader")   # the account reading is neither lab nor mallory
    query = {"keywords": ["x-ray", "chest"], "name": "new", "selector": "manual", "log": False,
             "scenarios": ["cotraining"], "top_k": 20}
    bounded = recommend(cloud, **query).scenarios["cotraining"]
    record = next(i.reasons["track_record"] for i in bounded.items if i.source == "m_src")
    assert record["tried"] == SELF_DEALT_TARGETS and record["accounts"] == 1
    assert bounded.items[0].source != "m_src"
    trusting = recommend(cloud, **query, trusted="mallory").scenarios["cotraining"]
    record = next(i.reasons["track_record"] for i in trusting.items if i.source == "m_src")
    assert record["tried"] == len(own)


def test_the_schemas_outcome_kinds_are_the_scenarios_outcomes_and_the_baseline():
    from tfp_mlflow.cloud.schema import OUTCOME_KINDS
    from tfp_mlflow.scenarios import list_scenarios

    assert {KnowledgeKind.BASELINE, *(s.outcome for s in list_scenarios())} == OUTCOME_KINDS


def test_an_accounts_rows_about_one_target_are_bounded_on_write_and_on_read(tmp_path, monkeypatch):
    from tfp_mlflow import evidence
    from tfp_mlflow.cloud import knowledge_log
    from tfp_mlflow.errors import BadInputError

    monkeypatch.setattr(knowledge_log, "MAX_ROWS_PER_TARGET", 3)
    cloud = Cloud(sqlite_uri(tmp_path / "mlflow.db"), cache_dir=tmp_path / "cache")
    cloud.contribute(None, name="target", keywords=["x-ray"], num_images=100, num_classes=2, contributor="lab")
    table = lambda *sources: Knowledge("target", KnowledgeKind.COTRAINING, tuple(  # noqa: E731
        KnowledgeRow(source=s, repetition=0, balanced_accuracy=0.8) for s in sources))
    cloud.add_knowledge(table("a", "b"), contributor="lab")
    with pytest.raises(BadInputError, match=r"lab already wrote 2 outcome and baseline rows about task 'target'; "
                                            r"readers count at most 3"):
        cloud.add_knowledge(table("c", "d"), contributor="lab")
    assert cloud.add_knowledge(table("c"), contributor="lab")                 # within the bound: written
    # The same content again is the stored run, not a refusal; policies and architectures are not outcomes.
    assert cloud.add_knowledge(table("a", "b"), contributor="lab")
    assert len(cloud.knowledge("target", [KnowledgeKind.COTRAINING])) == 2
    # Read side (a writer that went around tfp): rows beyond the bound are left out, counted from each run's params.
    runs = cloud.knowledge_runs([KnowledgeKind.COTRAINING])
    tasks = {t.name: t for t in cloud.tasks()}
    monkeypatch.setattr(evidence, "MAX_ROWS_PER_TARGET", 2)
    kept, ignored = evidence.admissible(runs, tasks)
    assert (len(kept), ignored) == (1, 1) and kept[0].params["rows"] == "1"


def test_a_verified_table_is_parsed_once_and_a_changed_checksum_is_read_again(tmp_path):
    from tfp_mlflow.cloud import knowledge_log
    from tfp_mlflow.cloud.schema import sha256_tag

    cloud = _cloud(tmp_path)
    run = cloud.knowledge_runs([KnowledgeKind.COTRAINING])[0]
    first = cloud.read_knowledge(run)
    assert cloud.read_knowledge(run) is first                                 # no second parse
    sha = sha256_tag(f"knowledge/{KnowledgeKind.COTRAINING}.json")
    assert run.tags[sha]
    forged = knowledge_log.StoredRun(run.run_id, {**run.tags, sha: "0" * 64}, run.params)
    assert cloud.read_knowledge(forged) is None                               # read and checked again: refused
    assert any(q["run_id"] == run.run_id for q in cloud.quarantined())


def test_a_refit_after_one_new_table_equals_a_fit_from_scratch(tmp_path):
    """What a query keeps between fits (parsed tables, their rows, affinity columns) gives the same model as
    nothing kept."""
    from tfp_mlflow import evidence
    from tfp_mlflow.cloud import knowledge_log

    cloud = _cloud(tmp_path)
    tasks = cloud.tasks()
    before = evidence.fit_track_record(cloud, tasks)
    rows = tuple(KnowledgeRow(source=s, repetition=1, balanced_accuracy=0.6 + 0.01 * i)
                 for i, s in enumerate(SOURCES) if s != "echo")
    cloud.add_knowledge(Knowledge("echo", KnowledgeKind.COTRAINING, rows))
    incremental = evidence.fit_track_record(cloud, tasks)
    assert incremental is not before and incremental.outcomes == before.outcomes + len(rows)
    for cache in (evidence._FITTED, evidence._COLUMNS, evidence._ROWS):
        cache.clear()
    knowledge_log._PARSED.__init__(knowledge_log.MAX_PARSED_ROWS)
    scratch = evidence.fit_track_record(cloud, tasks)
    pd.testing.assert_frame_equal(incremental.affinities, scratch.affinities)
    pd.testing.assert_frame_equal(incremental.model.outcomes.table, scratch.model.outcomes.table)
    for target in SOURCES:
        assert incremental.model.rule("cotraining", target, incremental.affinities) == \
            scratch.model.rule("cotraining", target, scratch.affinities)
