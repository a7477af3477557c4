"""The packed snapshot: a new client downloads one file plus what was contributed since, and a forged snapshot
member can never stand in for a fingerprint."""
from __future__ import annotations

import zipfile

import pytest
from click.testing import CliRunner

from tfp_mlflow.cli import main
from tfp_mlflow.cloud import Cloud
from tfp_mlflow.cloud.runs import RunLog
from tfp_mlflow.cloud.schema import Artifact, Kind, Tag
from tfp_mlflow.recommend import recommend
from tfp_mlflow.testing.stores import sqlite_uri

pytestmark = pytest.mark.slow


@pytest.fixture
def downloads(monkeypatch):
    """Every artifact a reader downloads (the real download, counted)."""
    seen: list[str] = []
    real = RunLog.download

    def counting(log, run_id, artifact_path, folder):
        seen.append(artifact_path)
        return real(log, run_id, artifact_path, folder)
    monkeypatch.setattr(RunLog, "download", counting)
    return seen


def test_a_new_client_reads_the_snapshot_and_only_newer_fingerprints(tmp_path, make_fingerprint, small_spec,
                                                                       downloads, monkeypatch):
    monkeypatch.setattr("tfp_mlflow.cloud.integrity.SNAPSHOT_MIN_MISSING", 2)
    uri = sqlite_uri(tmp_path / 'cloud' / 'mlflow.db')
    writer = Cloud(uri, cache_dir=tmp_path / "writer")
    for i in range(6):
        writer.contribute(make_fingerprint(f"t{i}", seed=i), spec=small_spec)
    result = CliRunner().invoke(main, ["cloud", "pack", "--tracking-uri", uri])
    assert result.exit_code == 0 and "packed 6 fingerprints" in result.output, result.output
    writer.contribute(make_fingerprint("t6", seed=6), spec=small_spec)        # after the snapshot
    downloads.clear()
    answer = recommend(Cloud(uri, cache_dir=tmp_path / "new-client"), make_fingerprint("target", seed=1),
                       top_k=2, log=False)
    assert len(answer.ranking) == 7 and not answer.quarantined
    fingerprints = [a for a in downloads if a == Artifact.FINGERPRINT]
    assert downloads.count(Artifact.SNAPSHOT) == 1 and len(fingerprints) == 1, downloads


def test_a_forged_snapshot_member_is_skipped_and_the_real_fingerprint_downloaded(tmp_path, make_fingerprint,
                                                                                 small_spec, downloads,
                                                                                 monkeypatch):
    monkeypatch.setattr("tfp_mlflow.cloud.integrity.SNAPSHOT_MIN_MISSING", 2)
    uri = sqlite_uri(tmp_path / 'cloud' / 'mlflow.db')
    writer = Cloud(uri, cache_dir=tmp_path / "writer")
    tasks = [writer.contribute(make_fingerprint(f"t{i}", seed=i), spec=small_spec) for i in range(3)]
    # Mallory's snapshot: t0's checksum as the name, another task's bytes as the content.
    forged = tmp_path / "fingerprints.zip"
    with zipfile.ZipFile(forged, "w") as archive:
        archive.writestr(f"{tasks[0].fingerprint_sha256}.npz",
                         make_fingerprint("t0", seed=99).save(tmp_path / "other.npz").read_bytes())
    with writer.record("snapshot", {"tfp.snapshot_tasks": "1"}) as run:
        run.log_file(Artifact.SNAPSHOT, lambda p: p.write_bytes(forged.read_bytes()))
    downloads.clear()
    reader = Cloud(uri, cache_dir=tmp_path / "reader")
    answer = recommend(reader, make_fingerprint("target", seed=0), top_k=2, log=False)
    assert answer.ranking[0].source == "t0" and not answer.quarantined     # the real t0, closest to seed 0
    assert downloads.count(Artifact.FINGERPRINT) == 3, downloads


def test_a_snapshot_pinned_by_another_account_with_a_future_start_time_is_not_read(tmp_path, make_fingerprint,
                                                                                   small_spec, downloads, monkeypatch):
    """Newest-wins would let anyone pin the snapshot every new client takes: readers take the cloud owner's."""
    monkeypatch.setattr("tfp_mlflow.cloud.integrity.SNAPSHOT_MIN_MISSING", 2)
    uri = sqlite_uri(tmp_path / 'cloud' / 'mlflow.db')
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    owner = Cloud(uri, cache_dir=tmp_path / "owner")
    for i in range(4):
        owner.contribute(make_fingerprint(f"t{i}", seed=i), spec=small_spec)
    owner.pack()
    from mlflow.tracking import MlflowClient

    mallory = MlflowClient(uri)           # MLflow's API alone, a start time a hundred years ahead
    pinned = mallory.create_run(owner.experiment_id(), start_time=4_000_000_000_000,
                                tags={Tag.KIND: Kind.SNAPSHOT, Tag.CONTRIBUTOR: "mallory"})
    empty = tmp_path / "fingerprints.zip"
    zipfile.ZipFile(empty, "w").close()
    mallory.log_artifact(pinned.info.run_id, str(empty), "snapshot")
    mallory.set_tag(pinned.info.run_id, Tag.COMPLETE, "1")
    downloads.clear()
    answer = recommend(Cloud(uri, cache_dir=tmp_path / "new-client"), make_fingerprint("target", seed=1),
                       top_k=2, log=False)
    assert len(answer.ranking) == 4
    assert downloads.count(Artifact.SNAPSHOT) == 1 and Artifact.FINGERPRINT not in downloads, downloads
