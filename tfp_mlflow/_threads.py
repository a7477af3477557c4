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


def free_cores() -> int:
    """Cores not busy with other work right now: the core count less the last minute's load (other processes'
    runnable threads), at least 1. On a shared machine, more compute threads than this only take turns."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):   # no load average on this platform
        return cores
    return max(1, min(cores, round(cores - load)))


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
