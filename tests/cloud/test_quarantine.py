"""Without authentication (a SQLite file anyone can write), a poisoned run written through MLflow's API is still
quarantined by every reader and never becomes the error of a query: the checks are the readers', not the server's."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.cloud.conftest import fill
from tests.plugins.test_attacks import _poisons
from tfp_mlflow.cloud import Cloud
from tfp_mlflow.cloud.schema import Tag, sha256_tag
from tfp_mlflow.recommend import recommend
from tfp_mlflow.testing.stores import sqlite_uri

pytestmark = pytest.mark.slow


def test_poisoned_runs_on_an_unauthenticated_cloud_are_quarantined(tmp_path, fingerprints, small_spec):
    import hashlib

    cloud = Cloud(sqlite_uri(tmp_path / 'cloud' / 'mlflow.db'), cache_dir=tmp_path / "cache")
    fill(cloud, fingerprints, small_spec)
    experiment = cloud.experiment_id()
    for name, (tags, params, files) in _poisons(small_spec).items():
        run = cloud.client.create_run(experiment, tags={Tag.CONTRIBUTOR: "mallory", **tags})
        for key, value in params.items():
            cloud.client.log_param(run.info.run_id, key, value)
        with tempfile.TemporaryDirectory() as tmp:
            for artifact, data in files.items():
                local = Path(tmp) / Path(artifact).name
                local.write_bytes(data)
                cloud.client.log_artifact(run.info.run_id, str(local), str(Path(artifact).parent))
                digest = hashlib.sha256(data).hexdigest()
                cloud.client.set_tag(run.info.run_id, sha256_tag(artifact),
                                     tags.get(Tag.FINGERPRINT_SHA256, digest) if name == "poison_tampered" else digest)
        cloud.client.set_tag(run.info.run_id, Tag.COMPLETE, "1")
    reader = Cloud(cloud.uri, cache_dir=tmp_path / "reader")
    result = recommend(reader, fingerprints["a_target"], top_k=2, log=False)
    assert result.ranking[0].source in {"a_1", "a_2"}
    assert not any(r.source.startswith("poison") for r in result.ranking)
    quarantined = {q["task"] for q in result.quarantined}
    assert set(_poisons(small_spec)) <= quarantined, sorted(quarantined)
    manual = recommend(reader, None, keywords=("x-ray",), selector="manual", log=False)
    assert manual.ranking and not any(r.source.startswith("poison") for r in manual.ranking)
