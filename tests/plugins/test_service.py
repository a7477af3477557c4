"""What the ``/tfp/`` API answers, computed by the service layer on a cloud in memory (the quick path; the same
routes through a real ``mlflow server`` are in test_server.py), and a worker's background preparation."""
from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest

from tfp_mlflow.cloud import Knowledge, KnowledgeKind, KnowledgeRow
from tfp_mlflow.errors import BadInputError, NotFoundError, TooLargeError
from tfp_mlflow.testing.memory import memory_cloud
from tfp_mlflow_plugins import service
from tfp_mlflow_plugins.readiness import Readiness


@pytest.fixture
def cloud(tmp_path, make_fingerprint, small_spec):
    cloud = memory_cloud(tmp_path / "cache")
    cloud.ensure_spec(small_spec)
    for index, (name, shape) in enumerate([("a_1", 1.5), ("a_2", 1.6), ("b_1", 4.0), ("b_2", 4.2)]):
        row = KnowledgeRow(architecture=f"arch_{name}", repetition=0, balanced_accuracy=0.8, held_out=40)
        cloud.contribute(make_fingerprint(name, seed=index, shape=shape, n=1500), domain=name[0],
                         knowledge=[Knowledge(name, KnowledgeKind.ARCHITECTURE, (row,))])
    cloud.contribute(None, name="described", keywords=["x-ray"], num_images=50, num_classes=2)
    return cloud


def test_tasks_and_a_tasks_page_say_what_the_cloud_holds(cloud):
    listed = {t["name"]: t for t in service.tasks(cloud)}
    assert set(listed) == {"a_1", "a_2", "b_1", "b_2", "described"}
    assert listed["a_1"]["knowledge"] == ["architecture"] and listed["a_1"]["has_fingerprint"]
    assert not listed["described"]["has_fingerprint"] and service.quarantined(cloud) == []
    detail = service.task_detail(cloud, "a_1")
    assert detail["nearest"][0]["source"] == "a_2"
    assert detail["knowledge_runs"][0]["rows"][0]["architecture"] == "arch_a_1"
    assert service.fingerprint_png(cloud, "a_1").startswith(b"\x89PNG")
    with pytest.raises(NotFoundError, match="no task named 'nope'"):
        service.task_detail(cloud, "nope")
    with pytest.raises(NotFoundError, match="has no fingerprint"):
        service.fingerprint_png(cloud, "described")


def test_an_upload_is_answered_as_tfp_recommend_would_and_every_option_is_read(cloud, make_fingerprint, tmp_path):
    body = make_fingerprint("new", seed=9, shape=1.55, n=1500).save(tmp_path / "new.npz").read_bytes()
    answer = service.recommend_upload(cloud, body, top_k=2)
    assert answer["ranking"][0]["source"] in {"a_1", "a_2"} and set(answer["scenarios"]) >= {"architecture"}
    narrow = service.recommend_upload(cloud, body, top_k=1, scenario="architecture", order_by="distance",
                                      merge="none", metric="auroc")
    assert set(narrow["scenarios"]) == {"architecture"} and narrow["metric"] == "auroc"
    with pytest.raises(BadInputError, match="merge must be none or one of"):
        service.recommend_upload(cloud, body, merge="sideways")
    with pytest.raises(TooLargeError, match="a fingerprint file is at most"):
        service.recommend_upload(cloud, b"0" * (service.MAX_UPLOAD_BYTES + 1))
    with pytest.raises(BadInputError, match="uploaded file"):
        service.recommend_upload(cloud, io.BytesIO(b"not an npz").getvalue())
    choices = service.query_choices()
    assert choices["scenarios"][0] == "all" and choices["merges"][0] == service.DEFAULT_MERGE
    assert {"auto", "distance"} == set(choices["orders"])
    assert {s["name"] for s in service.selectors()} >= {"bkld-small-target", "manual"}


def test_the_knowledge_map_places_every_fingerprinted_task(cloud):
    drawn = service.knowledge_map(cloud)
    points = {p["name"]: (p["x"], p["y"]) for p in drawn["points"]}
    assert set(points) == {"a_1", "a_2", "b_1", "b_2"}
    near = np.hypot(*np.subtract(points["a_1"], points["a_2"]))
    far = np.hypot(*np.subtract(points["a_1"], points["b_1"]))
    assert near < far


def test_a_worker_prepares_once_and_says_when_it_is_ready(cloud):
    readiness = Readiness()
    assert readiness.health() == {"ready": True, "state": "cold"}
    opened = []
    readiness.start("memory://", None, lambda url: opened.append(url) or cloud)
    readiness.start("memory://", None, lambda url: opened.append(url) or cloud)   # once per worker
    asyncio.run(readiness.wait(limit=120))
    health = readiness.health()
    assert health["state"] == "ready" and health["ready"] and health["seconds"] >= 0 and opened == ["memory://"]
    failing = Readiness()
    failing.start("memory://", None, lambda url: (_ for _ in ()).throw(OSError("no route")))
    asyncio.run(failing.wait(limit=60))
    assert failing.health() == {"ready": True, "state": "unprepared", "seconds": failing.detail["seconds"],
                                "reason": "OSError"}
