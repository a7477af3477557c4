"""The README's tour, run verbatim: its code block, as a user copies it, in a fresh folder with the installed `tfp`
on the PATH and no cloud of its own. Any non-zero exit or traceback fails."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.torch]


def bash_block(title: str) -> str:
    section = ROOT.joinpath("README.md").read_text().split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)


def tour_script() -> str:
    """The tour, then "Already using MLflow?" in the same folder (its example script is the repository's)."""
    # `mlflow ui` serves until stopped: the one line a script cannot run to its end.
    tour = "\n".join(line for line in bash_block("A tour").splitlines() if not line.startswith("mlflow ui"))
    return tour + "\n" + bash_block("Already using MLflow?")


def test_the_readme_tour_runs_as_written(tmp_path):
    script = tmp_path / "tour.sh"
    script.write_text("set -euo pipefail\n" + tour_script())
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               TFP_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    recommendation = json.loads((tmp_path / "rec.json").read_text())
    blocks = recommendation["scenarios"]
    # Content in every scenario, or the one line that says why not: the tour's two-epoch training on 12 held-out
    # images scores at chance level, which is kept in the cloud but not offered as evidence.
    empty = {name: block["notes"] for name, block in blocks.items() if not block["items"]}
    assert set(empty) <= {"architecture"}, empty
    assert all(any("at chance level" in note for note in notes) for notes in empty.values()), empty
    assert recommendation["next_steps"] and (tmp_path / "eval-plots" / "gain_curves.png").is_file()
    # Already using MLflow: the example's run became a task and its knowledge in the tour's cloud, by harvest.
    assert re.search(r"1 runs: 1 contributed", output), output[-3000:]
