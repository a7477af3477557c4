"""`tfp distances`, `tfp inspect`, `tfp selectors`: tables, CSV, plots and one-line errors; no torch needed."""
from __future__ import annotations

import csv
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from tfp_mlflow import get_selector, list_selectors, rank_sources
from tfp_mlflow.cli import main

# Runs the CLI as if torch were not installed: any import of torch (or torchvision, timm) fails.
NO_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'torchvision', 'timm'):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, NoTorch())
from tfp_mlflow.cli import main
main()
"""


@pytest.fixture
def fingerprint_files(tasks, tmp_path):
    return [task.fingerprint.save(tmp_path / f"{task.name}.npz") for task in tasks]


def test_distances_ranks_sources_for_a_target(fingerprint_files, tasks):
    result = CliRunner().invoke(main, ["distances", *map(str, fingerprint_files[1:]), "--target",
                                       str(fingerprint_files[0]), "--top-k", "3"])
    assert result.exit_code == 0, result.output
    assert "sources for task0 by bkld-small-target" in result.output
    shown = [(int(rank), name) for rank, name in re.findall(r"^│\s*(\d+)\s*│\s*(\S+)\s*│", result.output, re.M)]
    expected = rank_sources(get_selector("bkld-small-target"), tasks[0], tasks[1:], top_k=3)
    assert shown == [(entry.rank, entry.name) for entry in expected]      # the same order, position by position


def test_distances_csv_is_the_selector_matrix_with_zero_diagonal(fingerprint_files, tasks, tmp_path):
    out = tmp_path / "m.csv"
    result = CliRunner().invoke(main, ["distances", *map(str, fingerprint_files), "--selector", "vdna",
                                       "--csv", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(out.open()))
    assert rows[0][1:] == [t.name for t in tasks] and [r[0] for r in rows[1:]] == [t.name for t in tasks]
    matrix = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    expected = get_selector("vdna").matrix(tasks, tasks)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(matrix, expected, rtol=1e-15)


def test_inspect_summarises_and_draws(fingerprint_files, tmp_path):
    png = tmp_path / "fp.png"
    result = CliRunner().invoke(main, ["inspect", str(fingerprint_files[2]), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert "task2" in result.output and "12 (means" in result.output
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_selectors_lists_every_registered_selector_with_its_kind():
    result = CliRunner().invoke(main, ["selectors"])
    assert result.exit_code == 0
    rows = re.findall(r"^│ (\S+)\s+│ (\S+)\s+│ (\S+)\s+│", result.output, re.M)   # name, kind, needs
    assert sorted(name for name, _, _ in rows) == sorted(list_selectors()) == sorted(
        ["bkld-small-target", "bkld-large-source", "bkld-large-unweighted", "manual", "p2l", "p2l-size", "vdna", "fid",
         "track-record"])
    kinds = {name: (kind, needs) for name, kind, needs in rows}
    assert kinds["track-record"] == ("learned", "outcomes") and kinds["manual"] == ("distance", "keywords")
    assert kinds["fid"] == ("distance", "fingerprint")


def test_bad_files_give_one_line_and_exit_2_from_the_cli(bad_catalogue):
    runner = CliRunner()
    for case, (path, why) in bad_catalogue.items():
        result = runner.invoke(main, ["inspect", str(path)])
        assert result.exit_code == 2, (case, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and why in lines[0], (case, result.output)


def test_real_process_runs_without_torch_and_prints_no_traceback(fingerprint_files, bad_catalogue):
    ok = subprocess.run([sys.executable, "-c", NO_TORCH, "distances", *map(str, fingerprint_files)],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "bkld-small-target distances" in ok.stdout
    path, _ = bad_catalogue["pickled object array"]
    bad = subprocess.run([sys.executable, "-c", NO_TORCH, "distances", str(path)], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and "pickled objects" in bad.stderr


def test_importing_the_core_does_not_import_torch():
    # The recommender core and the server plugin stay torch-free, so a tracking server can host them cheaply.
    code = ("import sys, tfp_mlflow, tfp_mlflow.ranking, tfp_mlflow.cli, tfp_mlflow.recommend, "
            "tfp_mlflow_plugins.app; assert not {'torch', 'timm'} & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_spec_mismatch_is_one_line(make_fingerprint, small_spec, tmp_path):
    from tfp_mlflow import FingerprintSpec
    other = FingerprintSpec(backbone="b", weights_sha256="", lo=small_spec.lo, hi=small_spec.hi * 2)
    a = make_fingerprint("a").save(tmp_path / "a.npz")
    b = make_fingerprint("b", spec=other).save(tmp_path / "b.npz")
    result = CliRunner().invoke(main, ["distances", str(a), str(b)])
    assert result.exit_code == 2 and "never compared" in result.output


def test_usage_errors_are_one_line_naming_the_help_to_read():
    runner = CliRunner()
    for args, said in ((["recommend", "--top-k", "x"], "Invalid value for '--top-k'"),
                       (["nosuch"], "No such command 'nosuch'"),
                       (["cloud", "pack", "--bogus"], "No such option '--bogus'")):
        result = runner.invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and said in lines[0], result.stderr
        assert "--help` lists the options" in lines[0] and "Usage:" not in result.output


def test_tables_written_to_a_file_are_not_cut_at_80_columns(tmp_path):
    """A log file or a pipe gets tables 160 columns wide (COLUMNS overrides), not rich's 80."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    out = tmp_path / "selectors.log"
    with open(out, "w") as log:
        subprocess.run([sys.executable, "-m", "tfp_mlflow.cli", "selectors"], stdout=log, check=True, env=env)
    lines = out.read_text().splitlines()
    assert any("features weighted by softmax of the target's means" in line for line in lines)
    assert max(len(line) for line in lines) > 80
