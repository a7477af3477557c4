"""How long the quick path (``pytest -m "not slow"``) takes and how much of each package it calls.

Runs the quick path in subprocesses, run alone: plain on every core (what ``pytest -m "not slow"`` takes, as the
developer and CI run it), plain in one process (``-n 0``: the CPU it costs), and under coverage.py in one process,
then prints per package the share of functions the quick path called at least once (a function counts as called
when any line of its body ran) and the share of lines. Needs ``pip install coverage``.

    python benchmarks/quick_path.py [--skip-timing]
"""
from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"tfp_mlflow": ROOT / "tfp_mlflow",
            "plugins": ROOT / "plugins" / "tfp-mlflow-plugins" / "tfp_mlflow_plugins"}


def functions(path: Path) -> list[tuple[int, int]]:
    """``(first body line, last line)`` of every function and method of a module."""
    tree = ast.parse(path.read_text())
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body[1:] if ast.get_docstring(node) and len(node.body) > 1 else node.body
            spans.append((body[0].lineno, node.end_lineno or body[0].lineno))
    return spans


def package_of(path: Path) -> str:
    for name, root in PACKAGES.items():
        if path.is_relative_to(root):
            parts = path.relative_to(root).parts
            return f"{name}/{parts[0]}" if len(parts) > 1 else f"{name} (top level)"
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-timing", action="store_true", help="only the coverage run")
    args = parser.parse_args()
    quick = [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider"]
    if not args.skip_timing:
        for label, extra in (("on every core", []), ("in one process, -n 0", ["-n", "0"])):
            started = time.perf_counter()
            subprocess.run([*quick, *extra], cwd=ROOT, check=False, stdout=subprocess.DEVNULL)
            print(f"quick path {label}: {time.perf_counter() - started:.0f} s (run alone)")
    with tempfile.TemporaryDirectory() as tmp:
        data, report, rc = Path(tmp) / ".coverage", Path(tmp) / "coverage.json", Path(tmp) / "coveragerc"
        rc.write_text("[run]\nparallel = True\nconcurrency = thread, multiprocessing\nsource =\n"
                      + "".join(f"    {p}\n" for p in PACKAGES.values()))
        subprocess.run([sys.executable, "-m", "coverage", "run", f"--rcfile={rc}", f"--data-file={data}",
                        *quick[1:], "-n", "0"], cwd=ROOT, check=False, stdout=subprocess.DEVNULL)
        subprocess.run([sys.executable, "-m", "coverage", "combine", f"--rcfile={rc}", f"--data-file={data}"],
                       cwd=ROOT, check=False, capture_output=True)
        subprocess.run([sys.executable, "-m", "coverage", "json", f"--rcfile={rc}", f"--data-file={data}", "-o",
                        str(report)], cwd=ROOT, check=True, capture_output=True)
        files = json.loads(report.read_text())["files"]
    called: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])   # functions called, functions, lines run, lines
    for root in PACKAGES.values():
        for path in sorted(root.rglob("*.py")):
            entry = files.get(str(path)) or files.get(str(path.relative_to(ROOT))) or {}
            executed = set(entry.get("executed_lines", []))
            row = called[package_of(path)]
            for first, last in functions(path):
                row[0] += any(line in executed for line in range(first, last + 1))
                row[1] += 1
            summary = entry.get("summary", {})
            row[2] += summary.get("covered_lines", 0)
            row[3] += summary.get("num_statements", 0)
    print(f"{'package':<34} {'functions called':>17} {'lines run':>10}")
    for package, (hit, total, lines_hit, lines) in sorted(called.items()):
        if total:
            print(f"{package:<34} {100 * hit / total:>15.0f} % {100 * lines_hit / max(lines, 1):>8.0f} %"
                  f"   ({hit}/{total})")


if __name__ == "__main__":
    main()
