"""Progress where there is no terminal: a plain line when a task moved (percent, time so far, rate, time left), no
repeated line for a task that did not, and a last line per task only when it holds something new."""
from __future__ import annotations

import io
import re

from rich.console import Console

from tfp_mlflow.progress import Progress, plain_line

RUNNING = re.compile(r"fingerprint fundus_0: \d+% \(\d+/1,000\) in \d+ s(, ([\d.]+/s|\d+ s each), about \d+ (s|min) "
                     r"left)?")


def _plain(out: io.StringIO) -> Progress:
    # `every` far beyond the test: the background thread never reports, the test calls report() itself.
    return Progress(console=Console(file=out, force_terminal=False, width=200), every=3600)


def test_a_line_when_a_task_moved_and_none_when_it_did_not():
    out = io.StringIO()
    with _plain(out) as bar:
        job = bar.add_task("fingerprint fundus_0", total=1000)
        bar.advance(job, 250)
        bar.report()
        bar.report()                                             # nothing moved: no second line
        bar.advance(job, 250)
        bar.report()
        unbounded = bar.add_task("probing", total=None)
        bar.advance(unbounded, 7)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, lines                               # 25 %, 50 %, then probing's last line
    assert all(RUNNING.fullmatch(line) for line in lines[:2]), lines
    assert lines[0].startswith("fingerprint fundus_0: 25% (250/1,000)") and "50% (500/1,000)" in lines[1]
    assert re.fullmatch(r"probing: 7 done in \d+ s", lines[2])
    assert "\x1b" not in out.getvalue()                         # no terminal codes in a log file


def test_a_finished_task_ends_with_its_last_state():
    out = io.StringIO()
    with _plain(out) as bar:
        job = bar.add_task("fingerprint fundus_0", total=1000)
        bar.advance(job, 1000)
    assert out.getvalue().splitlines()[-1].startswith("fingerprint fundus_0: 100% (1,000/1,000) in ")


def test_on_a_terminal_it_is_richs_own_bar():
    out = io.StringIO()
    with Progress(console=Console(file=out, force_terminal=True, width=100), every=0.01) as bar:
        bar.add_task("draw", total=10, completed=10)
    assert "draw" in out.getvalue() and "done" not in out.getvalue()


def test_time_left_comes_from_all_the_work_done_so_far():
    from rich.progress import Task, TaskID

    # 28 of 100 trainings after 27 minutes, the last few of them quick: 72 more at the overall pace.
    task = Task(TaskID(0), "training", 100, 28, _get_time=lambda: 27 * 60.0)
    task.start_time = 0.0
    assert plain_line(task) == "training: 28% (28/100) in 27 min, 58 s each, about 69 min left"


def test_free_cores_leave_out_what_other_work_keeps_busy():
    import multiprocessing
    import os
    import time

    from tfp_mlflow._threads import free_cores

    cores = os.cpu_count() or 1
    assert 1 <= free_cores(0.2) <= cores
    stop = time.monotonic() + 1.5

    def spin():                      # other work keeping one core busy while we look
        while time.monotonic() < stop:
            pass

    # A process, not a thread: Python threads share one interpreter lock and would not load a second core.
    worker = multiprocessing.get_context("fork").Process(target=spin)
    worker.start()
    try:
        time.sleep(0.2)
        busy = free_cores(0.5)
    finally:
        worker.join()
    assert busy <= max(1, cores - 1)
