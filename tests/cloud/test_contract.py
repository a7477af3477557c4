"""The storage contract of :class:`tfp_mlflow.cloud.base.KnowledgeStore`, one suite run over every backend: the cloud
in memory (:mod:`tfp_mlflow.testing.memory`), a SQLite store, a real `mlflow server` on SQLite and a real `mlflow
server` on PostgreSQL (the team set-up).

Each test gets a cloud of its own: its own experiment on the module's server, or its own SQLite file.
"""
from __future__ import annotations

import inspect
import os
import uuid

import pytest

from tests.cloud.conftest import fill
from tfp_mlflow import BadInputError, SpecMismatchError
from tfp_mlflow.cloud import Cloud, Knowledge, KnowledgeKind, KnowledgeRow, KnowledgeStore
from tfp_mlflow.cloud.schema import Kind, Tag
from tfp_mlflow.recommend import recommend
from tfp_mlflow.testing.memory import memory_cloud
from tfp_mlflow.testing.servers import LocalServer
from tfp_mlflow.testing.stores import sqlite_uri

# Memory and SQLite on the quick path; the servers on the full run.
BACKENDS = ["memory", "sqlite", pytest.param("server", marks=[pytest.mark.slow, pytest.mark.server]),
            pytest.param("server-postgresql", marks=[pytest.mark.slow, pytest.mark.server, pytest.mark.postgres])]


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory):
    with LocalServer(tmp_path_factory.mktemp("server")) as server:
        yield server.url


@pytest.fixture(scope="module")
def postgres_server(tmp_path_factory, postgres):
    backend = postgres.create_database("mlflow_contract")
    with LocalServer(tmp_path_factory.mktemp("server-pg"), backend_store_uri=backend) as server:
        yield server.url


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path) -> Cloud:
    if request.param == "memory":
        return memory_cloud(tmp_path / "cache")
    if request.param == "sqlite":
        return Cloud(sqlite_uri(tmp_path / 'cloud' / 'mlflow.db'), cache_dir=tmp_path / "cache")
    url = request.getfixturevalue("plain_server" if request.param == "server" else "postgres_server")
    return Cloud(url, cache_dir=tmp_path / "cache", experiment=f"tfp-cloud-{uuid.uuid4().hex[:8]}")


def test_the_cloud_implements_the_storage_interface(store):
    assert isinstance(store, KnowledgeStore)


def _declared(cls) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in vars(cls).items()
            if callable(member) and not name.startswith("_")}


# That the Cloud takes every parameter of every method of the interface, of the same kind, is mypy's to check
# (`mypy` in .ci/run): tfp_mlflow/cloud/store.py hands a Cloud out as a KnowledgeStore.


def test_opening_a_cloud_changes_nothing_outside_it(tmp_path, monkeypatch):
    """No process-wide side effects in the constructor: a library user's environment stays as it was (the `tfp`
    command applies its own settings through configure_process)."""
    from tfp_mlflow.cloud.runs import PROCESS_DEFAULTS

    for key in PROCESS_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    before = dict(os.environ)
    cloud = Cloud(sqlite_uri(tmp_path / "cloud" / "mlflow.db"), cache_dir=tmp_path / "cache")
    cloud.experiment_id()
    assert dict(os.environ) == before


def test_contribute_then_recommend_round_trip(store, fingerprints, small_spec):
    fill(store, fingerprints, small_spec)
    assert [t.name for t in store.tasks()] == ["a_1", "a_2", "b_1", "b_2"]
    assert store.spec().id == small_spec.id
    result = recommend(store, fingerprints["a_target"], top_k=2)
    assert {r.source for r in result.ranking[:2]} == {"a_1", "a_2"}       # the target's own family first
    arch = result.suggestions("architecture")
    assert [i.architecture for i in arch] == [f"arch_{i.source}" for i in arch]
    assert arch[0].balanced_accuracy == pytest.approx(0.8) and arch[0].evidence["training_run"] == "r1"
    assert result.suggestions("augmentation")[0].policy_id.endswith("-policy")
    pre = result.suggestions("pretraining")
    assert "a_2" not in [i.source for i in pre] and pre[0].data_uri.startswith("/data/")
    payload = result.to_json()
    assert payload["schema"] == "tfp.recommendation/1" and payload["selector"] == "bkld-small-target"
    run = store.get_run(result.run_id)
    artifacts = set(store.list_artifacts(result.run_id))
    assert {"recommendation.json", "ranking.png"} <= artifacts and run.params["top_k"] == "2"
    item = result.suggestions("augmentation")[0]
    assert store.policy(item.policy["knowledge_run"], item.policy_id)["transform"]


def test_recontribution_updates_instead_of_duplicating(store, fingerprints, small_spec):
    fill(store, fingerprints, small_spec)
    fill(store, fingerprints, small_spec)          # same knowledge again: deduplicated
    assert len(store.tasks()) == 4
    assert len(store.knowledge("a_1")) == 2
    described = store.contribute(None, name="reference_only", keywords=["x-ray"], num_images=500, num_classes=2,
                                 domain="x-ray")
    assert not described.has_fingerprint
    fp = fingerprints["a_target"]
    attached = store.contribute(fp, name="reference_only")
    assert attached.has_fingerprint and attached.domain == "x-ray" and attached.num_images == fp.num_images
    assert [t.name for t in store.tasks()].count("reference_only") == 1


def test_prepared_stack_is_cached_and_rebuilt_when_the_cloud_changes(store, fingerprints, small_spec):
    fill(store, fingerprints, small_spec)
    first = recommend(store, fingerprints["a_target"], log=False)
    folders = list((store.cache.root / "prepared").iterdir())
    assert len(folders) == 1 and (folders[0] / "meta.json").is_file()
    again = recommend(store, fingerprints["a_target"], log=False)
    assert again.ranking == first.ranking
    assert list((store.cache.root / "prepared").iterdir()) == folders   # served from the cache
    store.contribute(fingerprints["a_target"], name="a_3")
    changed = recommend(store, fingerprints["a_target"], name="query", log=False)
    assert changed.ranking[0].source == "a_3"            # the target's own fingerprint, now a source
    assert len(list((store.cache.root / "prepared").iterdir())) == 2


def test_the_task_list_kept_as_the_cloud_grows_is_what_a_full_search_finds(store, fingerprints, small_spec, tmp_path):
    fill(store, fingerprints, small_spec)
    assert len(store.tasks()) == 4                                        # a full search, kept in the cache
    latest = store.cache.read_json(store.catalogue._latest_key())
    store.contribute(fingerprints["a_target"], name="a_3")                # a new task
    store.contribute(None, name="described", keywords=["x-ray"], num_images=50, num_classes=2)
    store.contribute(fingerprints["a_target"], name="a_1")                # a new version of a task
    grown = store.tasks()
    assert store.cache.read_json(store.catalogue._latest_key())["full_at"] == latest["full_at"]   # incremental
    fresh = Cloud(runs=store.runs, cache_dir=tmp_path / "fresh").tasks()  # the same store, searched whole
    assert grown == fresh and len(grown) == 6
    assert next(t for t in grown if t.name == "a_1").num_images == fingerprints["a_target"].num_images


def test_manual_selector_ranks_tasks_without_fingerprints(store):
    for name, keywords in [("chest_a", ["x-ray", "chest", "lung"]), ("skin_a", ["skin"]), ("chest_b", ["x-ray"])]:
        store.contribute(None, name=name, keywords=keywords, num_images=100, num_classes=2)
    with pytest.raises(BadInputError, match="needs the target's fingerprint"):
        recommend(store, None, keywords=["x-ray"], log=False)
    result = recommend(store, None, keywords=["x-ray", "chest"], selector="manual", log=False)
    assert [r.source for r in result.ranking] == ["chest_a", "chest_b", "skin_a"]
    assert result.suggestions("architecture") == [] and result.scenarios["architecture"].notes


def test_spec_mismatch_is_refused(store, fingerprints, small_spec, make_fingerprint):
    from tfp_mlflow import FingerprintSpec
    fill(store, fingerprints, small_spec)
    other = FingerprintSpec(backbone="other", weights_sha256="", lo=small_spec.lo, hi=small_spec.hi * 3)
    stranger = make_fingerprint("stranger", spec=other)
    with pytest.raises(SpecMismatchError, match=f"uses {small_spec.id}; re-fingerprint"):
        store.contribute(stranger, spec=other)
    with pytest.raises(SpecMismatchError):
        recommend(store, stranger, log=False)
    assert "stranger" not in [t.name for t in store.tasks()]


def test_bad_knowledge_is_refused_before_anything_is_written(store):
    with pytest.raises(BadInputError, match="outside"):
        store.contribute(None, name="t", keywords=["x"], knowledge=[
            Knowledge("t", KnowledgeKind.ARCHITECTURE,
                      (KnowledgeRow(architecture="resnet18", balanced_accuracy=1.7),))])
    with pytest.raises(BadInputError, match="impossible"):
        store.contribute(None, name="t", keywords=["x"], num_images=3, num_classes=10)
    assert store.tasks() == [] and store.find_runs(Kind.KNOWLEDGE) == []


def test_many_tables_at_once_are_as_idempotent_as_one_and_checked_before_any_is_written(store):
    table = lambda task, value, source="s": Knowledge(task, KnowledgeKind.COTRAINING, (  # noqa: E731
        KnowledgeRow(source=source, repetition=0, balanced_accuracy=value),))
    first = store.add_knowledge(table("a", 0.6), contributor="lab")
    ids = store.add_knowledge_many([table("a", 0.6), table("a", 0.7), table("b", 0.8)], contributor="lab")
    assert ids[0] == first and len(set(ids)) == 3
    assert store.add_knowledge_many([table("a", 0.7), table("b", 0.8)], contributor="lab") == ids[1:]
    assert store.add_knowledge(table("b", 0.8), contributor="lab") == ids[2]
    assert store.add_knowledge(table("b", 0.8), contributor="other") not in ids     # another's is its own item
    with pytest.raises(BadInputError, match="outside"):
        store.add_knowledge_many([table("c", 0.5), table("c", 1.5)], contributor="lab")
    assert [r for r in store.find_runs(Kind.KNOWLEDGE) if r.tags.get(Tag.TASK) == "c"] == []


def test_a_recorded_run_is_visible_only_when_its_block_completes(store):
    with pytest.raises(RuntimeError), store.record(Kind.KNOWLEDGE, {Tag.TASK: "t"}) as run:
        run.log_params({"rows": 1})
        failed = run.run_id
        raise RuntimeError("killed halfway")
    assert store.get_run(failed).status == "FAILED" and Tag.COMPLETE not in store.get_run(failed).tags
    assert store.find_runs(Kind.KNOWLEDGE, task="t") == []
    with store.record(Kind.KNOWLEDGE, {Tag.TASK: "t"}) as run:
        run.log_metrics({"best_balanced_accuracy": 0.5, "skipped": None})
        digest = run.log_file("notes/a.txt", lambda p: p.write_text("hello"))
    found = store.find_runs(Kind.KNOWLEDGE, task="t")
    assert [r.run_id for r in found] == [run.run_id] and found[0].status == "FINISHED"
    assert found[0].metrics == {"best_balanced_accuracy": 0.5} and len(digest) == 64
    long = store.start_run(Kind.STUDY, {Tag.TASK: "t"})        # a run several workers write
    store.recorder(long.run_id).log_params({"space": "x" * 7000})   # cut at MLflow's cap, not refused
    assert store.find_runs(Kind.STUDY) == []
    long.finish()
    assert len(store.get_run(long.run_id).params["space"]) == 6000 and len(store.find_runs(Kind.STUDY)) == 1


def test_the_memory_run_log_has_every_method_of_the_mlflow_one():
    """The parts of a cloud talk to a run log; the in-memory one answers every call the MLflow one does."""
    from tfp_mlflow.cloud.runs import RunLog
    from tfp_mlflow.testing.memory import MemoryRunLog

    for name, member in _declared(RunLog).items():
        assert hasattr(MemoryRunLog, name), f"MemoryRunLog lacks {name}"
        assert list(inspect.signature(getattr(MemoryRunLog, name)).parameters) == list(member.parameters), name
