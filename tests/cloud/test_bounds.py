"""Every stored object is bounded before it is read: size before download, layout before decompression, rows
before objects (a hostile stored object costs its reader a listing, not its size in memory)."""
from __future__ import annotations

import hashlib
import io
import json
import tracemalloc

import numpy as np
import pytest

from tfp_mlflow.cloud import Cloud, Knowledge, KnowledgeKind, KnowledgeRow
from tfp_mlflow.cloud.runs import RunLog
from tfp_mlflow.cloud.schema import Kind, Tag, artifact_limit, sha256_tag
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.spec import FingerprintSpec
from tfp_mlflow.testing.stores import sqlite_uri

pytestmark = pytest.mark.slow


def _stored(cloud: Cloud, task: str, artifact: str, data: bytes) -> str:
    """A complete knowledge run written with MLflow's API alone, its checksum recorded correctly."""
    client = cloud.client
    run = client.create_run(cloud.experiment_id(), tags={Tag.KIND: Kind.KNOWLEDGE, Tag.TASK: task,
                                                         Tag.KNOWLEDGE: "architecture", Tag.CONTRIBUTOR: "mallory"})
    path = cloud.cache.root.parent / "upload" / artifact.rsplit("/", 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    client.log_artifact(run.info.run_id, str(path), artifact.rsplit("/", 1)[0])
    client.set_tag(run.info.run_id, sha256_tag(artifact), hashlib.sha256(data).hexdigest())
    client.set_tag(run.info.run_id, Tag.COMPLETE, "1")
    return run.info.run_id


def test_an_oversized_knowledge_table_is_quarantined_without_being_downloaded(tmp_path, monkeypatch):
    cloud = Cloud(sqlite_uri(tmp_path / 'mlflow.db'), cache_dir=tmp_path / "cache")
    cloud.contribute(None, name="victim", keywords=["x-ray"], num_images=10, num_classes=2, knowledge=[
        Knowledge("victim", KnowledgeKind.BASELINE, (KnowledgeRow(balanced_accuracy=0.7),))])
    limit = artifact_limit("knowledge/architecture.json")
    rows = [{"architecture": "resnet18", "balanced_accuracy": 0.9}] * (limit // 40)
    huge = json.dumps({"task": "victim", "kind": "architecture", "rows": rows}).encode()
    assert len(huge) > limit
    big_run = _stored(cloud, "victim", "knowledge/architecture.json", huge)
    many = json.dumps({"task": "victim", "kind": "architecture",
                       "rows": [{"architecture": "r", "balanced_accuracy": 0.5}] * 10_001}).encode()
    assert len(many) < limit
    many_run = _stored(cloud, "victim", "knowledge/architecture.json", many)
    downloaded = []
    real = RunLog.download
    monkeypatch.setattr(RunLog, "download",
                        lambda log, run_id, path, folder: downloaded.append(run_id) or real(log, run_id, path, folder))
    reader = Cloud(cloud.uri, cache_dir=tmp_path / "reader")
    kinds = [k.kind for k in reader.knowledge("victim")]
    assert kinds == ["baseline"]
    reasons = {q["run_id"]: q["reason"] for q in reader.quarantined()}
    assert "stored as" in reasons[big_run] and "not downloaded" in reasons[big_run]
    assert "10,001 rows" in reasons[many_run]
    assert big_run not in downloaded


def test_a_spec_declaring_a_quarter_gigabyte_is_refused_from_its_headers(tmp_path):
    buffer = io.BytesIO()
    np.savez_compressed(buffer, lo=np.zeros(16_000_000), hi=np.zeros(16_000_000), spec=np.array("{}"))
    path = tmp_path / "spec.npz"
    path.write_bytes(buffer.getvalue())
    assert path.stat().st_size < 3_000_000
    tracemalloc.start()
    with pytest.raises(BadInputError, match="declares"):
        FingerprintSpec.load(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5_000_000
