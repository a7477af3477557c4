"""Prepared sources extended as the cloud grows answer exactly as sources prepared from scratch."""
from __future__ import annotations

import numpy as np
import pytest

import tfp_mlflow.prepared as prepared_module
from tfp_mlflow import evidence
from tfp_mlflow.cloud import Cloud
from tfp_mlflow.cloud.knowledge import Knowledge, KnowledgeRow
from tfp_mlflow.cloud.schema import KnowledgeKind
from tfp_mlflow.prepared import prepared_sources
from tfp_mlflow.ranking import rank_sources
from tfp_mlflow.recommend import recommend
from tfp_mlflow.selectors import JoinedSources, get_selector
from tfp_mlflow.task import Task
from tfp_mlflow.testing.memory import memory_cloud


def _forget_process_state() -> None:
    """As after a restart: nothing open in this process, only the cache on disk."""
    prepared_module._VIEWS.clear()
    prepared_module._OPEN.clear()


def _cloud(path, spec):
    cloud = memory_cloud(path)
    cloud.ensure_spec(spec)
    return cloud


def _contribute(cloud, make_fingerprint, index: int, seed: int | None = None):
    name = f"task{index}"
    fingerprint = make_fingerprint(name, seed=index if seed is None else seed, shape=1.2 + 0.3 * (index % 7),
                                   num_images=60 + index, moments=True)
    row = KnowledgeRow(architecture=["tf_efficientnet_lite0", "resnet34"][index % 2], repetition=0,
                       balanced_accuracy=0.6 + 0.01 * index, held_out=40)
    cloud.contribute(fingerprint, knowledge=[Knowledge(name, KnowledgeKind.ARCHITECTURE, (row,))])
    return fingerprint


def _outcomes(cloud, target: str, tasks) -> None:
    rng = np.random.default_rng(len(target))
    rows = tuple(KnowledgeRow(source=t.name, repetition=0, balanced_accuracy=float(rng.uniform(0.5, 0.9)),
                              held_out=200) for t in tasks if t.name != target)
    cloud.add_knowledge(Knowledge(target, KnowledgeKind.BASELINE,
                                  (KnowledgeRow(repetition=0, balanced_accuracy=0.7, held_out=200),)))
    cloud.add_knowledge(Knowledge(target, KnowledgeKind.PRETRAINING, rows))


def _parts(cloud, selector) -> list[int]:
    listing = prepared_module._digest([repr(selector), cloud.spec_id()])
    return [len(entry["rows"]) for entry in cloud.cache.read_json(f"parts-{listing}")]


def test_a_cloud_grown_task_by_task_ranks_as_one_prepared_from_scratch(make_fingerprint, small_spec, tmp_path):
    cloud = _cloud(tmp_path / "grown", small_spec)
    for index in range(6):
        _contribute(cloud, make_fingerprint, index)
    selector = get_selector("bkld-small-target")
    prepared_sources(cloud, selector, cloud.tasks())
    assert _parts(cloud, selector) == [6]
    sizes = []
    for index in range(6, 10):
        _contribute(cloud, make_fingerprint, index)
        prepared_sources(cloud, selector, cloud.tasks())
        sizes.append(_parts(cloud, selector))
    # A new task is one new part of one row; parts merge like a binary counter.
    assert sizes == [[6, 1], [6, 2], [9], [9, 1]]
    _contribute(cloud, make_fingerprint, 3, seed=99)          # a new version of task3: its old row is left out
    _outcomes(cloud, "task1", cloud.tasks())                   # the track record is fitted on both states
    prepared_sources(cloud, selector, cloud.tasks())
    _contribute(cloud, make_fingerprint, 10)
    _outcomes(cloud, "task10", cloud.tasks())
    target = Task.from_fingerprint(make_fingerprint("new", seed=123, shape=2.2, moments=True))
    scratch = Cloud(runs=cloud.runs, cache_dir=tmp_path / "scratch")     # the same store, an empty cache
    for name in ("bkld-small-target", "bkld-large-source", "vdna", "fid", "p2l", "p2l-size"):
        chooser = get_selector(name)
        grown = prepared_sources(cloud, chooser, cloud.tasks())
        fresh = prepared_sources(scratch, chooser, scratch.tasks())
        assert grown.names == fresh.names == [t.name for t in cloud.tasks()]
        np.testing.assert_allclose(chooser.distances(target, grown), chooser.distances(target, fresh), rtol=1e-12)
        ranked = [rank_sources(chooser, target, p) for p in (grown, fresh)]
        assert [r.name for r in ranked[0]] == [r.name for r in ranked[1]]   # distances: equal to rounding (BLAS)
    assert isinstance(prepared_sources(cloud, selector, cloud.tasks()), JoinedSources)
    answers = []
    for each in (cloud, scratch):
        evidence._FITTED.clear()           # fitted anew from each cache's prepared state
        answers.append(recommend(each, target.fingerprint, name="new", log=False).to_json())
    for answer in answers:
        answer.pop("cloud")
        for entry in answer["ranking"]:
            entry["distance"] = round(entry["distance"], 12)
    assert answers[0] == answers[1] and answers[0]["scenarios"]["architecture"]["items"]
    assert not any("no measured transfer outcomes" in note for note in answers[0]["notes"])


def test_a_restarted_process_prepares_nothing_it_has_on_disk(make_fingerprint, small_spec, tmp_path, monkeypatch):
    cloud = _cloud(tmp_path / "cache", small_spec)
    for index in range(5):
        _contribute(cloud, make_fingerprint, index)
    selector = get_selector("bkld-small-target")
    first = prepared_sources(cloud, selector, cloud.tasks())
    _contribute(cloud, make_fingerprint, 5)
    second = prepared_sources(cloud, selector, cloud.tasks())
    target = Task.from_fingerprint(make_fingerprint("new", seed=7))
    expected = selector.distances(target, second)
    _forget_process_state()

    def refuse(*_args):
        raise AssertionError("prepared again after a restart")
    monkeypatch.setattr(prepared_module, "_prepare", refuse)
    again = prepared_sources(cloud, selector, cloud.tasks())
    assert again is not second and len(first) == 5
    np.testing.assert_array_equal(selector.distances(target, again), expected)


def test_a_selector_that_compares_sources_with_each_other_refuses_parts(make_fingerprint, small_spec, tmp_path):
    cloud = _cloud(tmp_path / "cache", small_spec)
    for index in range(4):
        _contribute(cloud, make_fingerprint, index)
    parts = [get_selector("p2l").prepare(cloud.as_tasks(cloud.tasks()[:2], with_fingerprints=True)),
             get_selector("p2l").prepare(cloud.as_tasks(cloud.tasks()[2:], with_fingerprints=True))]
    joined = JoinedSources(parts, [0, 1, 2, 3])
    target = Task.from_fingerprint(make_fingerprint("new", seed=7))
    assert len(get_selector("p2l").distances(target, joined)) == 4
    size_prior = get_selector("p2l-size")
    with pytest.raises(Exception, match="compares each source with the others"):
        size_prior.distances(target, JoinedSources([p.__class__(**{**vars(p), "selector": "p2l-size"})
                                                    for p in parts], [0, 1, 2, 3]))
