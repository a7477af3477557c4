"""Threads that carry the caller's context: the one way tfp runs I/O and decompression in parallel.

A server answering a request forwards its caller's credentials in a context variable (``cloud/context.py``); a
plain thread starts with an empty context, so its downloads would go out without them. Each call here runs in its
own copy of the caller's context (a context is entered by one thread at a time).
"""
from __future__ import annotations

import collections
import contextvars
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["thread_map", "read_ahead", "default_threads", "free_cores"]

T = TypeVar("T")
R = TypeVar("R")


def default_threads() -> int:
    """A thread per core, at most 8."""
    return min(8, os.cpu_count() or 1)


def free_cores(sample: float = 0.5) -> int:
    """Cores not busy with other work right now, at least 1: the core count less what the whole machine kept busy
    over the last ``sample`` seconds (Linux's ``/proc/stat``; elsewhere the last minute's load average, which
    also counts work that has just ended). On a shared machine, more compute threads than this only take turns."""
    cores = os.cpu_count() or 1
    busy = _busy_cores(sample)
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):   # no load average on this platform
            return cores
    return max(1, min(cores, round(cores - busy)))


def _busy_cores(sample: float) -> float | None:
    """Cores the machine kept busy over ``sample`` seconds, from two readings of ``/proc/stat``; ``None`` where
    there is none."""
    import time

    def reading() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as handle:
                fields = [int(v) for v in handle.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)      # idle and iowait
        return sum(fields), idle

    first = reading()
    if first is None or sample <= 0:
        return None
    time.sleep(sample)
    second = reading()
    if second is None or second[0] == first[0]:
        return None
    total, idle = second[0] - first[0], second[1] - first[1]
    return (os.cpu_count() or 1) * (total - idle) / total


def thread_map(function: Callable[[T], R], items: Sequence[T], workers: int | None = None) -> list[R]:
    """``[function(item) for item in items]`` on up to ``workers`` threads, in order, in the caller's context."""
    workers = workers or default_threads()
    if workers <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    contexts = [contextvars.copy_context() for _ in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda pair: pair[0].run(function, pair[1]), zip(contexts, items)))


def read_ahead(function: Callable[[T], R], items: Iterable[T], workers: int | None = None) -> Iterator[R]:
    """``function(item)`` for each item, yielded in order while the next few run on threads (in the caller's
    context); at most twice as many results as threads are held at once."""
    workers = workers or default_threads()
    if workers <= 1:
        yield from (function(item) for item in items)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append(pool.submit(contextvars.copy_context().run, function, item))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
