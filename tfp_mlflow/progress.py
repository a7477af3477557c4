"""Progress that shows wherever output goes: rich's bars on a terminal; elsewhere (a log file, CI, ``nohup``, a
cluster job) one plain line per task at a steady pace, with percent done, rate and time left.

>>> from tfp_mlflow.progress import Progress
>>> with Progress(every=60) as bar:                                   # doctest: +SKIP
...     job = bar.add_task("fingerprint fundus_0", total=1000)
...     bar.advance(job, 250)
fingerprint fundus_0: 25% (250/1,000), 41.7/s, about 18 s left
"""
from __future__ import annotations

import threading

from rich import progress as _rich

__all__ = ["Progress", "plain_line"]


def plain_line(task: _rich.Task) -> str:
    """One line for a task: ``description: 42% (420/1,000), 35.1/s, about 17 s left``."""
    done = f"{task.completed:,.0f}"
    if not task.total:
        return f"{task.description}: {done} done"
    line = f"{task.description}: {100 * task.completed / task.total:.0f}% ({done}/{task.total:,.0f})"
    if task.speed:
        line += f", {task.speed:.1f}/s"
        if task.remaining:
            seconds = task.remaining / task.speed
            line += f", about {seconds:.0f} s left" if seconds < 120 else f", about {seconds / 60:.0f} min left"
    return line


class Progress(_rich.Progress):
    """:class:`rich.progress.Progress` that, when its console is not a terminal, prints :func:`plain_line` for
    every unfinished task each ``every`` seconds and once more for every task when it stops."""

    def __init__(self, *columns, every: float = 30.0, **kwargs) -> None:
        super().__init__(*columns, **kwargs)
        self._every = every
        self._plain = not self.console.is_terminal and not kwargs.get("disable", False)
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

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
            self.console.print(plain_line(task), highlight=False, markup=False)

    def _report(self) -> None:
        while not self._stopped.wait(self._every):
            for task in self.tasks:
                if not task.finished:
                    self.console.print(plain_line(task), highlight=False, markup=False)
