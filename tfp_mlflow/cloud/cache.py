"""A local content-addressed cache of what the cloud serves (fingerprints, specs, knowledge tables, policies), and
a folder for what the layers above derive from it (the selector stacks of :mod:`tfp_mlflow.prepared`).

Entries are keyed by the SHA-256 a run recorded when it wrote the file (or, for runs older than those records, by
the run's own id), never by a name a writer chooses, so one run can never stand in for another's content; such an
entry never goes stale, and a repeated query downloads only what changed. Entries are written to a temporary name
and renamed, and the checksum is verified before an entry is kept.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from tfp_mlflow._paths import default_cache_dir
from tfp_mlflow.cloud.schema import artifact_limit
from tfp_mlflow.errors import CloudError, TamperedError, first_line

__all__ = ["ArtifactSource", "LocalCache", "default_cache_dir"]


class ArtifactSource(Protocol):
    """Where the cache downloads from: the cloud's run log (:class:`tfp_mlflow.cloud.runs.RunLog`)."""

    def artifact_size(self, run_id: str, artifact_path: str) -> int | None:
        """The stored size, before any download (``None``: not listed)."""

    def download(self, run_id: str, artifact_path: str, folder: Path) -> Path:
        """The artifact, downloaded into ``folder``."""


class LocalCache:
    """Files downloaded from cloud runs, keyed by content."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root else default_cache_dir() / "cloud"

    def path(self, key: str, artifact_path: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key)
        return self.root / f"{safe}{Path(artifact_path).suffix}"

    def fetch(self, source: ArtifactSource, run_id: str, artifact_path: str, *, key: str,
              sha256: str | None = None) -> Path:
        """Local path of a run's artifact, downloaded from ``source`` (the cloud's run log) only when the key is not
        cached yet.

        The stored size is read from the artifact listing first and an artifact larger than a conforming one of its
        kind (:data:`~tfp_mlflow.cloud.schema.ARTIFACT_LIMITS`) is refused (:class:`TamperedError`) before any
        byte is downloaded; the checksum is computed while streaming the file, never by reading it whole.
        """
        target = self.path(key, artifact_path)
        if target.is_file():
            return target
        max_bytes = artifact_limit(artifact_path)
        if max_bytes is not None:
            size = source.artifact_size(run_id, artifact_path)
            if size is not None and size > max_bytes:
                raise TamperedError(f"{artifact_path} of run {run_id} is stored as {size:,} bytes; a conforming one "
                                    f"is at most {max_bytes:,}, so it is not downloaded")
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root) as tmp:
            try:
                local = source.download(run_id, artifact_path, Path(tmp))
            except Exception as exc:
                raise CloudError(f"cannot download {artifact_path} of run {run_id} ({type(exc).__name__}: "
                                 f"{first_line(exc)})",
                                 http_status=exc.http_status if isinstance(exc, CloudError) else None) from None
            if max_bytes is not None and local.stat().st_size > max_bytes:
                raise TamperedError(f"{artifact_path} of run {run_id} is {local.stat().st_size:,} bytes; a "
                                    f"conforming one is at most {max_bytes:,}")
            if sha256 is not None:
                digest = _sha256_of(local)
                if digest != sha256:
                    raise TamperedError(f"{artifact_path} of run {run_id} has checksum {digest[:16]}..., the run "
                                        f"recorded {sha256[:16]}... when it was written; the artifact was altered")
            staged = Path(tmp) / "staged"
            shutil.move(str(local), staged)
            os.replace(staged, target)
        return target

    def put(self, sha256: str, artifact_path: str, data: bytes) -> None:
        """Cache ``data``, a file this process just wrote to a run, under its checksum (checked here, so a wrong one
        caches nothing)."""
        if hashlib.sha256(data).hexdigest() != sha256:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.root, suffix=".partial", delete=False) as handle:
            handle.write(data)
        os.replace(handle.name, self.path(sha256, artifact_path))

    def fetch_many(self, source: ArtifactSource, items: Sequence[tuple[str, str, str]], workers: int = 8) -> None:
        """Download ``(run_id, artifact_path, sha256)`` items not cached yet (keyed and verified by the checksum,
        each within its kind's size limit), ``workers`` at once."""
        from tfp_mlflow._threads import thread_map

        missing = [item for item in items if not self.path(item[2], item[1]).is_file()]
        if not missing:
            return

        def fetch(item: tuple[str, str, str]) -> Path | None:
            run_id, artifact_path, sha256 = item
            try:
                return self.fetch(source, run_id, artifact_path, key=sha256, sha256=sha256)
            except TamperedError:
                return None   # not cached: its reader meets the same check and quarantines that run alone
        # Each download runs in a copy of the caller's context, so credentials forwarded by the server go along.
        thread_map(fetch, missing, workers)

    def unpack(self, archive: Path, wanted: set[str], max_member_bytes: int = 256 * 2**20) -> int:
        """Cache the members of a snapshot (``<sha256>.npz`` each) whose checksum is wanted and not cached yet; a
        member whose content does not hash to its name is skipped (a forged snapshot costs its download, nothing
        else). Returns how many were cached."""

        added = 0
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            with zipfile.ZipFile(archive) as snapshot:
                for info in snapshot.infolist():
                    sha = info.filename.removesuffix(".npz")
                    if sha not in wanted or info.file_size > max_member_bytes or \
                            self.path(sha, "fingerprint.npz").is_file() or not re.fullmatch(r"[0-9a-f]{64}", sha):
                        continue
                    data = snapshot.read(info)
                    if hashlib.sha256(data).hexdigest() != sha:
                        continue
                    with tempfile.NamedTemporaryFile(dir=self.root, suffix=".partial", delete=False) as handle:
                        handle.write(data)
                    os.replace(handle.name, self.path(sha, "fingerprint.npz"))
                    added += 1
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError):
            pass   # an unreadable snapshot: the fingerprints are downloaded one by one instead
        return added

    def read_json(self, key: str):
        """The JSON stored under ``key``, or ``None`` when absent or unreadable."""
        try:
            return json.loads(self.path(key, "entry.json").read_text())
        except (OSError, ValueError):
            return None

    def write_json(self, key: str, value) -> None:
        """Store ``value`` under ``key`` (written whole, then renamed into place)."""
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.path(key, "entry.json")
        with tempfile.NamedTemporaryFile("w", dir=self.root, suffix=".tmp", delete=False) as handle:
            json.dump(value, handle)
        os.replace(handle.name, target)

    def folder(self, kind: str) -> Path:
        """A folder of the cache for entries a layer above keeps itself (``prepared``: selector stacks,
        :mod:`tfp_mlflow.prepared`)."""
        return self.root / kind


def _sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """The file's SHA-256, read a megabyte at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
