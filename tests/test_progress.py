"""Progress where there is no terminal: plain lines at a steady pace, and a last line per task at the end."""
from __future__ import annotations

import io
import re
import time

from rich.console import Console

from tfp_mlflow.progress import Progress


def test_without_a_terminal_progress_prints_plain_lines_with_percent_rate_and_time_left():
    out = io.StringIO()
    with Progress(console=Console(file=out, force_terminal=False, width=200), every=0.05) as bar:
        job = bar.add_task("fingerprint fundus_0", total=1000)
        for _ in range(8):
            bar.advance(job, 50)
            time.sleep(0.03)
        time.sleep(0.12)                                       # at least one report while unfinished
        unbounded = bar.add_task("probing", total=None)
        bar.advance(unbounded, 7)
    lines = out.getvalue().splitlines()
    running = [line for line in lines if re.fullmatch(r"fingerprint fundus_0: \d+% \(\d+/1,000\), [\d.]+/s, "
                                                      r"about \d+ (s|min) left", line)]
    assert running and lines[-2:] == [running[-1], "probing: 7 done"]
    assert "\x1b" not in out.getvalue()                       # no terminal codes in a log file


def test_on_a_terminal_it_is_richs_own_bar():
    out = io.StringIO()
    with Progress(console=Console(file=out, force_terminal=True, width=100), every=0.01) as bar:
        bar.add_task("draw", total=10, completed=10)
    assert "draw" in out.getvalue() and "done" not in out.getvalue()
