"""A fingerprint selector's sources, prepared from a cloud once and extended as the cloud grows, shared by every
query.

:func:`prepared_sources` asks the store only what its contract offers (its spec, its tasks' fingerprints, its local
cache): preparing is the selector's work (:meth:`~tfp_mlflow.selectors.FingerprintSelector.prepare`), the cache
keys and the layout in parts are this module's, and the store keeps no selector state.

A selector whose distances are per source (:attr:`~tfp_mlflow.selectors.Selector.joinable`, all but ``p2l-size``)
keeps its sources in parts, listed in the cache under the selector and the spec. A query uses every part that still
holds one of its tasks and prepares only the tasks no part holds, as one new part: adding a task to a cloud of
10,000 costs what preparing one task costs, and a restarted process reads the parts from disk. Parts are merged
like a binary counter (the newest two whenever the newer holds at least half as many rows as the older), so there
are at most about ``log2(N)`` of them, and each task is prepared again only about ``log2(N)`` times over the
cloud's life; rows of replaced tasks are dropped at the next merge, and all parts are prepared anew once they hold
twice as many rows as the query needs. The answer is the whole set's: the same distances and rankings
(``tests/test_prepared.py`` holds an extended state against one prepared from scratch).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

from tfp_mlflow.cloud.base import KnowledgeStore
from tfp_mlflow.cloud.records import LazyTasks
from tfp_mlflow.cloud.store import CloudTask
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.selectors import JoinedSources, PreparedSources, Selector

__all__ = ["prepared_sources", "MERGE_RATIO", "PREPARED_KEEP"]

#: The newest part is merged into the one before it once it holds at least this share of that one's rows.
MERGE_RATIO = 0.5
#: Prepared sets kept on disk and open in a process (the parts of each selector's sources, for the cloud states
#: seen recently).
PREPARED_KEEP = 32
#: A prepared set used this recently is never pruned (another process may be reading it).
PREPARED_KEEP_SECONDS = 3600
#: Joined views kept in this process (one per selector and task list seen recently).
_VIEWS_KEEP = 8
_VIEWS: OrderedDict[str, PreparedSources] = OrderedDict()
_VIEWS_LOCK = threading.Lock()


def prepared_sources(cloud: KnowledgeStore, selector: Selector, tasks: Sequence[CloudTask]) -> PreparedSources:
    """The tasks prepared for a fingerprint selector, reusing every part of them the local cache holds.

    Each task is identified by its name, run, checksum and ranking fields, so a new version of a task is a new row.
    Missing fingerprints are fetched several at once, then loaded one at a time (only the variant the selector
    reads).
    """
    rows = [_row(t) for t in tasks]
    spec_id = cloud.spec_id()     # a call to the store: read once per query
    key = _digest([repr(selector), spec_id, rows, str(cloud.cache.root)])
    if not selector.joinable:
        return _stored(cloud, key, lambda: _prepare(cloud, selector, tasks))
    with _VIEWS_LOCK:
        view = _VIEWS.get(key)   # the key names every row, so a view never goes stale
        if view is not None:
            _VIEWS.move_to_end(key)
            return view
    view = _extended(cloud, selector, tasks, rows, spec_id)
    with _VIEWS_LOCK:
        _VIEWS[key] = view
        while len(_VIEWS) > _VIEWS_KEEP:
            _VIEWS.popitem(last=False)
    return view


def _extended(cloud: KnowledgeStore, selector: Selector, tasks: Sequence[CloudTask], rows: list[str],
              spec_id: str | None) -> PreparedSources:
    """The tasks as the cached parts that hold them plus one new part for the rest, merged as the module says."""
    listing = "parts-" + _digest([repr(selector), spec_id])
    by_row = dict(zip(rows, tasks))

    def part(part_rows: list[str]) -> tuple[str, list[str], PreparedSources]:
        """A new part holding ``part_rows`` (prepared now, or read from the cache when another process did)."""
        key = _digest([repr(selector), spec_id, part_rows])
        return key, part_rows, _stored(cloud, key, lambda: _prepare(cloud, selector, [by_row[r] for r in part_rows]))

    wanted = {row: i for i, row in enumerate(rows)}
    parts: list[tuple[str, list[str], PreparedSources]] = []
    covered: set[str] = set()
    for entry in _listed(cloud.cache.read_json(listing)):
        live = [r for r in entry["rows"] if r in wanted and r not in covered]
        opened = _opened(cloud, entry["key"]) if live else None
        if opened is not None and len(opened) == len(entry["rows"]):
            parts.append((entry["key"], entry["rows"], opened))
            covered.update(live)
    missing = [r for r in rows if r not in covered]
    if missing:
        parts.append(part(missing))
    if sum(len(p[1]) for p in parts) > 2 * len(rows) and len(parts) > 1:
        parts = [part(rows)]   # mostly replaced rows: prepared anew
    while len(parts) > 1 and len(parts[-1][1]) >= MERGE_RATIO * len(parts[-2][1]):
        older, newer = parts[-2], parts[-1]
        merged = [r for r in [*older[1], *newer[1]] if r in wanted]
        parts[-2:] = [part(list(dict.fromkeys(merged)))]
        for old_key, _, _ in (older, newer):
            _forget(cloud, old_key)
    cloud.cache.write_json(listing, [{"key": k, "rows": r} for k, r, _ in parts])
    offsets, index = 0, [-1] * len(rows)
    for _, part_rows, _ in parts:
        for position, row in enumerate(part_rows):
            slot = wanted.get(row)
            if slot is not None and index[slot] < 0:
                index[slot] = offsets + position
        offsets += len(part_rows)
    if len(parts) == 1 and index == list(range(len(parts[0][1]))):
        return parts[0][2]
    return JoinedSources([p for _, _, p in parts], index)


def _prepare(cloud: KnowledgeStore, selector: Selector, tasks: Sequence[CloudTask]) -> PreparedSources:
    # A cold query waits on the network: the snapshot, then the missing fingerprints several at once.
    cloud.prefetch(tasks)
    return selector.prepare(LazyTasks(cloud, tasks, selector.variants or ("small",), selector.needs_moments))


# -- prepared sets in the cloud's local cache --------------------------------------------------------------------
#: Prepared sets open in this process, by folder, most recently used last.
_OPEN: OrderedDict[str, PreparedSources] = OrderedDict()
_OPEN_LOCK = threading.Lock()


def _stored(cloud: KnowledgeStore, key: str, build: Callable[[], PreparedSources]) -> PreparedSources:
    """The prepared set stored under ``key`` (memory-mapped), built and saved on a miss.

    Sets used within :data:`PREPARED_KEEP_SECONDS`, and the :data:`PREPARED_KEEP` most recently used, are kept on
    disk; as many stay open in this process, so every query of a server worker shares one memory map (and what a
    selector derived from it at its first query) instead of opening its own. An unreadable set is rebuilt.
    """
    opened = _opened(cloud, key)
    if opened is not None:
        return opened
    folder = cloud.cache.folder("prepared") / key
    build().save(folder)
    _prune(folder.parent)
    return _remember(folder, PreparedSources.load(folder))


def _opened(cloud: KnowledgeStore, key: str) -> PreparedSources | None:
    """The prepared set stored under ``key``, or ``None`` when there is none (or it cannot be read)."""
    folder = cloud.cache.folder("prepared") / key
    with _OPEN_LOCK:
        opened = _OPEN.get(str(folder))
        if opened is not None:
            _OPEN.move_to_end(str(folder))
    if opened is not None and (folder / "meta.json").is_file():
        _touch(folder)
        return opened
    if not (folder / "meta.json").is_file():
        return None
    try:
        prepared = PreparedSources.load(folder)
    except BadInputError:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    _touch(folder)   # recently used: kept by the pruning
    return _remember(folder, prepared)


def _forget(cloud: KnowledgeStore, key: str) -> None:
    """Close a prepared set in this process (its memory map and what was derived from it); it stays on disk until
    pruned."""
    with _OPEN_LOCK:
        _OPEN.pop(str(cloud.cache.folder("prepared") / key), None)


def _remember(folder: Path, prepared: PreparedSources) -> PreparedSources:
    with _OPEN_LOCK:
        _OPEN[str(folder)] = prepared
        _OPEN.move_to_end(str(folder))
        while len(_OPEN) > PREPARED_KEEP:
            _OPEN.popitem(last=False)
    return prepared


def _prune(root: Path) -> None:
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    now = time.time()
    for old in sorted(folders, key=_mtime, reverse=True)[PREPARED_KEEP:]:
        if now - _mtime(old) > PREPARED_KEEP_SECONDS:
            shutil.rmtree(old, ignore_errors=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _touch(folder: Path) -> None:
    try:
        os.utime(folder)
    except OSError:
        pass


def _listed(value: object) -> list[dict]:
    """The parts listing read from the cache, or nothing when it is not one (written by an older version)."""
    if not isinstance(value, list):
        return []
    return [e for e in value if isinstance(e, dict) and isinstance(e.get("key"), str)
            and isinstance(e.get("rows"), list) and all(isinstance(r, str) for r in e["rows"])]


def _row(task: CloudTask) -> str:
    return _digest([task.name, task.run_id, task.fingerprint_sha256, task.num_images, task.intrinsic_dim])[:20]


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()[:32]
