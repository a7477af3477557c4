"""The README's two set-up commands are the ones CI runs."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    section = ROOT.joinpath("README.md").read_text().split("## Set up and run", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [next(line for line in block.splitlines() if line and not line.startswith("#")) for block in blocks]


def test_readme_starts_with_two_commands_that_ci_runs():
    install_and_run, tests = _readme_commands()[:2]
    ci = ROOT.joinpath(".ci/run").read_text()
    assert install_and_run.startswith("python3 -m venv .venv && .venv/bin/pip install -c constraints.txt -e")
    assert '.venv/bin/pip install -q -c constraints.txt -e ".[test]" -e ./plugins/tfp-mlflow-plugins' in ci
    assert '-e ".[test]" -e ./plugins/tfp-mlflow-plugins' in install_and_run
    assert tests in ci.splitlines()
