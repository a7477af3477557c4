"""Progress that shows wherever output goes: rich's bars on a terminal; elsewhere (a log file, CI, ``nohup``, a
cluster job) one plain line per task when it moved, at most every ``every`` seconds, with percent done, time so
far, rate and time left; a task that has not moved says so every ten periods, and a finished one once.

>>> from tfp_mlflow.progress import Progress
>>> with Progress(every=60) as bar:                                   # doctest: +SKIP
...     job = bar.add_task("fingerprint fundus_0", total=1000)
...     bar.advance(job, 250)
fingerprint fundus_0: 25% (250/1,000) in 6 s, 41.7/s, about 18 s left
"""
from __future__ import annotations

import threading
import time

from rich import progress as _rich

__all__ = ["Progress", "plain_line"]


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def plain_line(task: _rich.Task) -> str:
    """One line for a task: ``description: 42% (420/1,000) in 12 s, 35.1/s, about 17 s left``."""
    done = f"{task.completed:,.0f}"
    spent = f" in {_duration(task.elapsed)}" if task.elapsed is not None else ""
    if not task.total:
        return f"{task.description}: {done} done{spent}"
    line = f"{task.description}: {100 * task.completed / task.total:.0f}% ({done}/{task.total:,.0f}){spent}"
    # The rate of everything done so far, not of the last few updates: steps of uneven length (one training is
    # minutes, the next seconds) made a windowed rate promise "6 min left" at 28 % after 27 minutes.
    speed = task.completed / task.elapsed if task.elapsed and task.completed else None
    if speed:
        line += f", {speed:.1f}/s" if speed >= 1 else f", {1 / speed:.0f} s each"
        if task.remaining:
            line += f", about {_duration(task.remaining / speed)} left"
    return line


class Progress(_rich.Progress):
    """:class:`rich.progress.Progress` that, when its console is not a terminal, prints :func:`plain_line` for
    every unfinished task each ``every`` seconds and once more for every task when it stops."""

    def __init__(self, *columns, every: float = 30.0, **kwargs) -> None:
        # Rich's bars estimate time left from the rate over all completed work too (its default: the last 30 s).
        kwargs.setdefault("speed_estimate_period", 7 * 24 * 3600.0)
        super().__init__(*columns, **kwargs)
        self._every = every
        self._plain = not self.console.is_terminal and not kwargs.get("disable", False)
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._shown: dict[int, tuple[float, float]] = {}   # task id -> (completed, monotonic time) last printed

    def start(self) -> None:
        if not self._plain:
            return super().start()
        self._stopped.clear()
        self._thread = threading.Thread(target=self._report, name="tfp-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if not self._plain:
            return super().stop()
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for task in self.tasks:
            if self._shown.get(task.id, (None, 0.0))[0] != task.completed:   # its last state, unless just shown
                self._show(task)

    def report(self) -> None:
        """One round of plain lines: each unfinished task that moved since its last line, and one that has not
        moved for ten periods (so a stalled step is visible); what the background thread calls every period."""
        now = time.monotonic()
        for task in self.tasks:
            if task.finished:
                continue
            completed, at = self._shown.get(task.id, (None, 0.0))
            if completed != task.completed or now - at >= 10 * self._every:
                self._show(task)

    def _show(self, task: _rich.Task) -> None:
        self._shown[task.id] = (task.completed, time.monotonic())
        self.console.print(plain_line(task), highlight=False, markup=False)

    def _report(self) -> None:
        while not self._stopped.wait(self._every):
            self.report()
