"""The knowledge cloud beyond its contract (test_contract.py): killed writers, concurrent writers, paging, the task
list cache, the CLI against real servers and the hostile-input catalogue."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from tests.cloud.conftest import fill
from tfp_mlflow import BadInputError
from tfp_mlflow.cli import main
from tfp_mlflow.cloud import Cloud
from tfp_mlflow.cloud.schema import Kind
from tfp_mlflow.recommend import recommend
from tfp_mlflow.testing.servers import LocalServer
from tfp_mlflow.testing.stores import sqlite_uri

pytestmark = pytest.mark.slow


@pytest.fixture
def sqlite_cloud(tmp_path):
    return Cloud(sqlite_uri(tmp_path / 'cloud' / 'mlflow.db'), cache_dir=tmp_path / "cache")




def test_task_list_is_cached_until_any_client_changes_the_cloud(tmp_path, fingerprints, small_spec):
    uri = sqlite_uri(tmp_path / 'cloud' / 'mlflow.db')
    reader, writer = Cloud(uri, cache_dir=tmp_path / "reader"), Cloud(uri, cache_dir=tmp_path / "writer")
    fill(writer, fingerprints, small_spec)
    searches = []
    search_runs = reader.client.search_runs

    def counted(*args, **kwargs):                     # the real client, counting what the reader asks for
        searches.append(kwargs.get("max_results"))
        return search_runs(*args, **kwargs)
    reader.client.search_runs = counted
    first = reader.tasks()
    assert [t.name for t in first] == ["a_1", "a_2", "b_1", "b_2"] and max(searches) > 1
    searches.clear()
    assert reader.tasks() == first and searches == [1]          # warm: only the state check
    writer.contribute(fingerprints["a_target"], name="a_3")    # another client's contribution
    assert [t.name for t in reader.tasks()] == ["a_1", "a_2", "a_3", "b_1", "b_2"]
    updated = writer.contribute(None, name="a_1", keywords=["renamed"])
    assert [t.keywords for t in reader.tasks() if t.name == "a_1"] == [("renamed",)]
    assert updated.run_id in {t.run_id for t in reader.tasks()}
    searches.clear()
    for stale in reader.cache.root.glob("tasks-*.json"):
        stale.write_text("{not json")                          # a damaged cache entry is searched again
    assert len(reader.tasks()) == 5 and max(searches) > 1


def test_search_follows_pages(sqlite_cloud, fingerprints, small_spec):
    fill(sqlite_cloud, fingerprints, small_spec)
    sqlite_cloud.runs.page_size = 3                                # real MLflow page tokens, 4 tasks over 2 pages
    assert [t.name for t in sqlite_cloud.tasks()] == ["a_1", "a_2", "b_1", "b_2"]
    assert len(sqlite_cloud.runs.find_runs(Kind.KNOWLEDGE)) > 3


KILLED = """
import os, signal, sys
from tfp_mlflow import Fingerprint
from tfp_mlflow.cloud import Cloud
from tfp_mlflow.cloud.recorder import RunRecorder
stage = sys.argv[3]
def die(self, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
if stage == "before-complete":      # every artifact written, completion tag not yet
    RunRecorder.finish = die
elif stage == "mid-artifacts":      # killed while uploading the fingerprint
    RunRecorder.log_file = die
cloud = Cloud(sys.argv[1], cache_dir=sys.argv[4])
cloud.contribute(Fingerprint.load(sys.argv[2]), shareable=True, data_uri="/d", spec=None)
"""


def test_killed_contribution_never_shows_up_and_rerun_completes(tmp_path, fingerprints, small_spec):
    uri = sqlite_uri(tmp_path / 'cloud' / 'mlflow.db')
    cloud = Cloud(uri, cache_dir=tmp_path / "cache")
    cloud.ensure_spec(small_spec)
    path = fingerprints["a_1"].save(tmp_path / "a_1.npz")
    for stage in ("before-complete", "mid-artifacts"):
        proc = subprocess.run([sys.executable, "-c", KILLED, uri, str(path), stage, str(tmp_path / "c2")],
                              capture_output=True, text=True, timeout=180)
        assert proc.returncode == -9, proc.stderr[-2000:]
        assert cloud.tasks() == []
    proc = subprocess.run([sys.executable, "-c", KILLED, uri, str(path), "none", str(tmp_path / "c2")],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [t.name for t in cloud.tasks()] == ["a_1"]


RESUMABLE = """
import sys
from tfp_mlflow import FingerprintSpec
from tfp_mlflow.cloud import Cloud
from tfp_mlflow.testing.load import load_task
cloud = Cloud(sys.argv[1], cache_dir=sys.argv[2])
spec = FingerprintSpec.load(sys.argv[3])
cloud.spec_id()                                 # MLflow's client is made at the first call: ready to write now
print("ready", flush=True)
for index in range(int(sys.argv[4])):          # a resumable batch: skips what is already complete
    fingerprint = load_task(spec, 0, index)
    if cloud.task(fingerprint.name) is None:
        cloud.contribute(fingerprint, spec=spec)
"""


def test_contributor_killed_at_random_points_never_leaves_a_partial_task(tmp_path, small_spec):
    import random
    import signal
    import time

    from tfp_mlflow.testing.load import _sha, load_task

    uri = sqlite_uri(tmp_path / 'cloud' / 'mlflow.db')
    cloud = Cloud(uri, cache_dir=tmp_path / "cache")
    cloud.ensure_spec(small_spec)
    spec_path = small_spec.save(tmp_path / "spec.npz")
    expected = {load_task(small_spec, 0, i).name: _sha(load_task(small_spec, 0, i)) for i in range(12)}
    command = [sys.executable, "-c", RESUMABLE, uri, str(tmp_path / "c2"), str(spec_path), "12"]
    chooser = random.Random(7)
    for _ in range(12):
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()[-2000:]
        time.sleep(chooser.uniform(0.0, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        for task in cloud.tasks():                       # only whole tasks, byte-identical to what was sent
            assert task.fingerprint_sha256 == expected[task.name]
            assert cloud.fingerprint(task).num_draws > 0
    visible_after_kills = len(cloud.tasks())
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    tasks = cloud.tasks()
    assert sorted(t.name for t in tasks) == sorted(expected) and 0 < visible_after_kills <= len(expected)
    assert all(t.fingerprint_sha256 == expected[t.name] for t in tasks)
    assert recommend(cloud, load_task(small_spec, 1, 0), top_k=3, log=False).ranking


CONTRIBUTOR = """
import sys
from tfp_mlflow import Fingerprint, FingerprintSpec
from tfp_mlflow.cloud import Cloud
cloud = Cloud(sys.argv[1], cache_dir=sys.argv[2])
spec = FingerprintSpec.load(sys.argv[3])
for path in sys.argv[4:]:
    cloud.contribute(Fingerprint.load(path), spec=spec)
"""


def test_several_processes_contributing_at_once_lose_nothing(tmp_path, make_fingerprint, small_spec):
    uri = sqlite_uri(tmp_path / 'cloud' / 'mlflow.db')
    cloud = Cloud(uri, cache_dir=tmp_path / "cache")
    cloud.ensure_spec(small_spec)
    spec_path = small_spec.save(tmp_path / "spec.npz")
    groups = [[make_fingerprint(f"p{p}_t{t}", seed=10 * p + t).save(tmp_path / f"p{p}_t{t}.npz") for t in range(3)]
              for p in range(3)]
    procs = [subprocess.Popen([sys.executable, "-c", CONTRIBUTOR, uri, str(tmp_path / f"c{p}"), str(spec_path),
                               *map(str, group)], stderr=subprocess.PIPE, text=True) for p, group in enumerate(groups)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
    assert sorted(t.name for t in cloud.tasks()) == sorted(f"p{p}_t{t}" for p in range(3) for t in range(3))


def test_eight_first_writers_on_a_new_sqlite_cloud_all_succeed(tmp_path, make_fingerprint, small_spec):
    """Eight `tfp contribute` start at once on a cloud that does not exist yet: MLflow's schema creation is
    serialised, so none fails (unserialised, most died in the migration: `_alembic_tmp_latest_metrics exists`)."""
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    spec_path = small_spec.save(tmp_path / "spec.npz")
    files = [make_fingerprint(f"first{i}", seed=i).save(tmp_path / f"first{i}.npz") for i in range(8)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    procs = [subprocess.Popen([sys.executable, "-m", "tfp_mlflow.cli", "contribute", str(path), "--spec",
                               str(spec_path), "--new-cloud"],
                              env={**env, "TFP_CACHE_DIR": str(tmp_path / f"cache{i}")},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i, path in enumerate(files)]
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 8, "\n".join(o[-600:] for o in outputs)
    assert not any("Traceback" in o for o in outputs)
    cloud = Cloud(uri, cache_dir=tmp_path / "cache")
    assert sorted(t.name for t in cloud.tasks()) == sorted(f"first{i}" for i in range(8))


# -- the remote path: a real `mlflow server` on 127.0.0.1 ---------------------------------------------------------

@pytest.fixture(scope="module", params=[pytest.param("sqlite", marks=pytest.mark.server),
                                        pytest.param("postgresql", marks=[pytest.mark.server, pytest.mark.postgres])])
def mlflow_server(request, tmp_path_factory):
    """A real `mlflow server`, backed by SQLite or by PostgreSQL (the documented team set-up)."""
    backend = None
    if request.param == "postgresql":
        backend = request.getfixturevalue("postgres").create_database("mlflow_cloud")
    with LocalServer(tmp_path_factory.mktemp("server"), backend_store_uri=backend) as server:
        yield server.url


def test_cli_against_the_server_as_a_user_would(mlflow_server, fingerprints, small_spec, tmp_path):
    runner = CliRunner()
    spec_path = small_spec.save(tmp_path / "spec.npz")
    results = tmp_path / "results.csv"
    results.write_text("architecture,balanced_accuracy,auroc\nresnet50,0.9,0.95\nresnet18,0.7,0.8\n")
    env = {"MLFLOW_TRACKING_URI": mlflow_server, "TFP_CACHE_DIR": str(tmp_path / "cache")}
    target = fingerprints["a_target"].save(tmp_path / "target.npz")
    for name in ("a_1", "b_1"):
        path = fingerprints[name].save(tmp_path / f"cli_{name}.npz")
        result = runner.invoke(main, ["contribute", str(path), "--name", f"cli_{name}", "--results", str(results),
                                      "--spec", str(spec_path)], env=env)
        assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["recommend", str(target), "--json", "--scenario", "architecture", "--top-k", "10"],
                           env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.lstrip().startswith("{"), result.stdout[:500]
    payload = json.loads(result.stdout)
    items = {i["source"]: i for i in payload["scenarios"]["architecture"]["items"]}
    assert items["cli_a_1"]["architecture"] == items["cli_b_1"]["architecture"] == "resnet50"
    assert items["cli_a_1"]["rank"] < items["cli_b_1"]["rank"]          # same family ranks closer
    assert list(payload["scenarios"]) == ["architecture"]
    down = runner.invoke(main, ["recommend", str(target), "--tracking-uri", "http://127.0.0.1:9"], env=env)
    assert down.exit_code == 1 and "cannot reach the cloud" in down.output


# -- load: several contributors at once while a reader queries -----------------------------------------------------

def test_concurrent_contributors_and_a_querier_lose_nothing_on_a_real_server(mlflow_server, small_spec, tmp_path):
    from tfp_mlflow.testing.load import run_load

    report = run_load(mlflow_server, small_spec, processes=8, tasks_per_process=3, workdir=tmp_path)
    print(report.summary())
    assert report.present == report.expected == 24 and report.lost == 0, report.messages
    assert report.duplicates == 0 and report.wrong == 0
    assert report.half_written_seen == 0 and report.query_errors == 0, report.messages
    assert report.query_latencies                                   # the reader really queried meanwhile


# -- the hostile-input catalogue, against a real server ----------------------------------------------------------

def _hostile_contributions(tmp_path, bad_catalogue, make_fingerprint, small_spec) -> dict:
    """name -> (extra `tfp contribute` arguments, expected words of the one-line error)."""
    from tfp_mlflow import FingerprintSpec

    good = make_fingerprint("hostile_ok", seed=9).save(tmp_path / "ok.npz")
    cases = {f"fingerprint: {name}": ([str(path)], why) for name, (path, why) in bad_catalogue.items()}

    def policy(name: str, body) -> str:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(body))
        return str(path)

    def results(name: str, text: str) -> str:
        path = tmp_path / f"{name}.csv"
        path.write_text(text)
        return str(path)

    def json_file(name: str, body) -> str:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(body))
        return str(path)

    def raw_file(name: str, data: bytes) -> str:
        path = tmp_path / name
        path.write_bytes(data)
        return str(path)

    victim = make_fingerprint("hostile_shape", seed=3)
    base = {f"counts_{v}": np.asarray(victim.counts_of(v)) for v in victim.variants}
    base["feature_sum"] = np.asarray(victim.feature_sum)

    def forged(name: str, arrays: dict) -> str:
        meta = {**victim.metadata(), "name": "hostile_" + "".join(c for c in name if c.isalnum())}
        path = tmp_path / f"forged-{len(list(tmp_path.glob('forged-*')))}.npz"
        np.savez(path, meta=np.array(json.dumps(meta)), **arrays)
        return str(path)

    def narrower(m: int) -> dict:
        return {k: v[:m] for k, v in base.items()}

    def rebinned(variant: str, bins: int) -> dict:
        counts = base[f"counts_{variant}"]
        merged = counts.reshape(counts.shape[0], bins, -1).sum(axis=2)
        return {**base, f"counts_{variant}": merged}

    def without(variant: str) -> dict:
        return {k: v for k, v in base.items() if k != f"counts_{variant}"}

    def extra_variant() -> dict:
        return {**base, "counts_medium": rebinned("small", 50)["counts_small"]}

    other = FingerprintSpec(backbone="other", weights_sha256="", lo=small_spec.lo, hi=small_spec.hi * 3)
    cases.update({
        "spec mismatch": ([str(make_fingerprint("hostile_spec", spec=other).save(tmp_path / "o.npz"))], "spec"),
        "path traversal in --name": ([str(good), "--name", "../../etc/passwd"], "task name"),
        "1,000 keywords": ([str(good), "--keywords", ",".join(f"k{i}" for i in range(1000))], "at most 64"),
        "policy naming a Python callable": ([str(good), "--policy", policy("callable", {"transform": {
            "__class_fullname__": "builtins.eval", "p": 1.0}})], "policy"),
        "policy with a non-albumentations class": ([str(good), "--policy", policy("foreign", {"transform": {
            "__class_fullname__": "torchvision.transforms.RandomCrop", "p": 1.0}})], "policy"),
        "policy Lambda": ([str(good), "--policy", policy("lambda", {"transform": {
            "__class_fullname__": "Lambda", "name": "x", "p": 1.0}})], "policy"),
        "metric outside [0, 1]": ([str(good), "--results", results(
            "metric", "architecture,balanced_accuracy,auroc\nresnet18,1.7,0.9\n")], "outside"),
        "negative metric": ([str(good), "--results", results(
            "negative", "architecture,balanced_accuracy,auroc\nresnet18,-0.1,0.9\n")], "outside"),
        "impossible size": (["--name", "hostile_size", "--keywords", "x"], None),
        "--shareable without a data URI": ([str(good), "--shareable"], "--data-uri"),
        # results: wrong JSON types, non-finite numbers, undecodable text, nesting
        "results: a list for a metric": ([str(good), "--results", json_file(
            "list-metric", [{"architecture": "resnet18", "balanced_accuracy": [0.5]}])], "not a number"),
        "results: a number for kind": ([str(good), "--results", json_file(
            "number-kind", [{"kind": 3, "architecture": "resnet18", "balanced_accuracy": 0.5}])], "kind must be"),
        "results: 1e400 repetition": ([str(good), "--results", results(
            "huge-rep", "architecture,balanced_accuracy,repetition\nresnet18,0.5,1e400\n")], "not a finite number"),
        "results: 1e400 in JSON": ([str(good), "--results", raw_file(
            "huge.json", b'[{"architecture": "resnet18", "balanced_accuracy": 1e400}]')], "too large"),
        "results: NaN metric": ([str(good), "--results", results(
            "nan", "architecture,balanced_accuracy\nresnet18,nan\n")], "not a finite number"),
        "results: infinite metric": ([str(good), "--results", results(
            "inf", "architecture,balanced_accuracy\nresnet18,inf\n")], "not a finite number"),
        "results: boolean metric": ([str(good), "--results", json_file(
            "bool", [{"architecture": "resnet18", "balanced_accuracy": True}])], "not a number"),
        "results: fractional repetition": ([str(good), "--results", results(
            "frac", "architecture,balanced_accuracy,repetition\nresnet18,0.5,1.5\n")], "whole number"),
        "results: nested 200,000 deep": ([str(good), "--results", raw_file(
            "deep.json", b"[" * 200_000 + b"]" * 200_000)], "nests deeper"),
        "results: an object, not a list": ([str(good), "--results", json_file("object", {"a": 1})],
                                           "list of objects"),
        "results: not JSON": ([str(good), "--results", raw_file("broken.json", b"[{")], "not valid JSON"),
        "results: non-UTF-8 CSV": ([str(good), "--results", raw_file(
            "latin.csv", "architecture,balanced_accuracy\nr\xe9snet,0.5\n".encode("latin-1"))], "not UTF-8"),
        "results: non-UTF-8 JSON": ([str(good), "--results", raw_file("latin.json", b'[{"a": "\xe9"}]')],
                                    "not UTF-8"),
        "results: unknown column": ([str(good), "--results", results(
            "column", "architecture,accuracy\nresnet18,0.5\n")], "unknown columns"),
        "results: unknown kind": ([str(good), "--results", results(
            "kind", "kind,architecture,balanced_accuracy\nmagic,resnet18,0.5\n")], "unknown kind"),
        "results: policy kind": ([str(good), "--results", results(
            "policykind", "kind,policy_id\npolicy,p1\n")], "unknown kind"),
        "results: architecture with a space": ([str(good), "--results", results(
            "space", "architecture,balanced_accuracy\nres net,0.5\n")], "timm model name"),
        "results: source path traversal": ([str(good), "--results", results(
            "source", "kind,source,balanced_accuracy\npretraining,../x,0.5\n")], "task name"),
        "results: no metric": ([str(good), "--results", results(
            "nometric", "architecture,auroc\nresnet18,\n")], "no metric"),
        "results: empty": ([str(good), "--results", results("empty", "architecture,balanced_accuracy\n")],
                           "no results"),
        "results: 10,001 rows": ([str(good), "--results", results(
            "many", "architecture,balanced_accuracy\n" + "resnet18,0.5\n" * 10_001)], "at most 10,000"),
        "results: missing file": ([str(good), "--results", str(tmp_path / "none.csv")], "does not exist"),
        # policies: what albumentations cannot build is refused here, not stored and failing later
        "policy albumentations cannot build": ([str(good), "--policy", policy("unbuildable", {"transform": {
            "__class_fullname__": "HorizontalFlip", "p": "often"}})], "cannot be built"),
        "policy unknown transform": ([str(good), "--policy", policy("unknown", {"transform": {
            "__class_fullname__": "MakeItBetter", "p": 1.0}})], "not an albumentations transform"),
        "policy nested 200,000 deep": ([str(good), "--policy", raw_file(
            "deep-policy.json", b'{"transform": ' + b"[" * 200_000 + b"]" * 200_000 + b"}")], "nests deeper"),
        "policy not an object": ([str(good), "--policy", policy("list", [1, 2])], "JSON object"),
        "policy not JSON": ([str(good), "--policy", raw_file("broken-policy.json", b"{")], "not valid JSON"),
        "policy not UTF-8": ([str(good), "--policy", raw_file("latin-policy.json", b'{"\xe9": 1}')],
                             "not UTF-8"),
        "policy NaN probability": ([str(good), "--policy", raw_file(
            "nan-policy.json", b'{"transform": {"__class_fullname__": "HorizontalFlip", "p": NaN}}')],
            "not valid JSON"),
        "policy over 1 MiB": ([str(good), "--policy", policy("large", {"transform": {
            "__class_fullname__": "HorizontalFlip", "p": 0.5}, "pad": "x" * 1_100_000})], "larger than"),
        "policy file missing": ([str(good), "--policy", str(tmp_path / "no" / "such.json")], "does not exist"),
        # fields
        "3,000-character domain": ([str(good), "--domain", "d" * 3000], "at most 2000"),
        "3,000-character data URI": ([str(good), "--data-uri", "u" * 3000, "--shareable"], "at most 2000"),
        "empty keyword": ([str(good), "--keywords", "x-ray,,chest"], "keyword"),
        "65-character keyword": ([str(good), "--keywords", "k" * 65], "at most 64 characters"),
        "200-character --name": ([str(good), "--name", "n" * 200], "task name"),
        # fingerprints of the cloud's spec id that do not conform to the spec
        **{f"nonconforming: {name}": ([forged(name, arrays)], why) for name, (arrays, why) in {
            "10 features": (narrower(10), "features"),
            "50 small bins": (rebinned("small", 50), "bins"),
            "no small variant": (without("small"), "lacks variant small"),
            "an extra variant": (extra_variant(), "does not define"),
        }.items()},
    })
    return cases


def test_hostile_catalogue_is_refused_with_one_line_writes_nothing_and_the_server_keeps_serving(
        mlflow_server, bad_catalogue, make_fingerprint, small_spec, tmp_path):
    from mlflow.entities import ViewType

    cloud = Cloud(mlflow_server, cache_dir=tmp_path / "cache")
    cloud.ensure_spec(small_spec)
    experiment = cloud.experiment_id()
    before = len(cloud.client.search_runs([experiment], run_view_type=ViewType.ALL, max_results=50000))
    cases = _hostile_contributions(tmp_path, bad_catalogue, make_fingerprint, small_spec)
    runner = CliRunner()
    env = {"MLFLOW_TRACKING_URI": mlflow_server, "TFP_CACHE_DIR": str(tmp_path / "cli-cache")}
    for name, (arguments, why) in cases.items():
        if name == "impossible size":             # only reachable through the API: the CLI takes sizes from files
            with pytest.raises(BadInputError, match="impossible"):
                cloud.contribute(None, name="hostile_size", keywords=["x"], num_images=3, num_classes=10)
            continue
        result = runner.invoke(main, ["contribute", *arguments], env=env)
        message = result.output.strip()
        assert result.exit_code == 2, f"{name}: {result.output[-800:]}"
        assert message.startswith("error:") and "\n" not in message and "Traceback" not in message, name
        assert why.lower() in message.lower(), f"{name}: {message}"
    after = len(cloud.client.search_runs([experiment], run_view_type=ViewType.ALL, max_results=50000))
    assert after == before, "a refused contribution wrote a run"
    assert len(cases) >= 80
    good = make_fingerprint("hostile_ok", seed=9).save(tmp_path / "ok2.npz")
    result = runner.invoke(main, ["contribute", str(good)], env=env)  # the server still serves
    assert result.exit_code == 0, result.output


def test_an_experiment_whose_artifacts_only_a_server_reaches_is_one_line_not_a_traceback(tmp_path, fingerprints,
                                                                                           small_spec):
    """A SQLite cloud a server once created an experiment in with ``mlflow-artifacts:/`` (before tfp placed them
    beside the cloud's): a local recommendation still answers, saying it was not logged; a cloud whose own
    experiment lives behind a server is refused in one line naming what to run instead."""
    from tfp_mlflow.cloud.schema import RECOMMENDATION_EXPERIMENT

    uri = sqlite_uri(tmp_path / "cloud" / "mlflow.db")
    cloud = Cloud(uri, cache_dir=tmp_path / "cache")
    fill(cloud, fingerprints, small_spec)
    cloud.client.create_experiment(RECOMMENDATION_EXPERIMENT, artifact_location="mlflow-artifacts:/7")
    result = recommend(Cloud(uri, cache_dir=tmp_path / "cache"), fingerprints["a_target"], top_k=2)
    assert result.run_id == "" and result.ranking[0].source in {"a_1", "a_2"}
    assert any(n.startswith("not logged as a run: experiment 'tfp-recommendations' keeps its artifacts on a "
                            "tracking server") for n in result.notes), result.notes
    other = sqlite_uri(tmp_path / "served" / "mlflow.db")
    Cloud(other, cache_dir=tmp_path / "c2").client.create_experiment("tfp-cloud",
                                                                      artifact_location="mlflow-artifacts:/1")
    target = fingerprints["a_target"].save(tmp_path / "target.npz")
    out = CliRunner().invoke(main, ["recommend", str(target)], env={"MLFLOW_TRACKING_URI": other,
                                                                   "TFP_CACHE_DIR": str(tmp_path / "c3")})
    assert out.exit_code == 1, out.output
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "point --tracking-uri / MLFLOW_TRACKING_URI at that server" in lines[0], out.stderr


def test_a_relative_sqlite_uri_is_the_callers_folder_made_absolute(tmp_path, monkeypatch):
    from tfp_mlflow.cloud.runs import absolute_uri

    monkeypatch.chdir(tmp_path)
    cloud = Cloud("sqlite:///tfp-cloud/mlflow.db", cache_dir=tmp_path / "cache")
    assert cloud.uri == f"sqlite:///{tmp_path / 'tfp-cloud' / 'mlflow.db'}"
    cloud.contribute(None, name="t", keywords=["x"], num_images=4, num_classes=2)   # artifact locations resolve too
    assert (tmp_path / "tfp-cloud" / "mlflow.db").is_file()
    assert absolute_uri("http://host:5000") == "http://host:5000" and absolute_uri("sqlite:////a/b.db") == \
        "sqlite:////a/b.db"


def test_runs_get_unique_names_even_after_a_seed_and_name_the_mlflow_project_run(sqlite_cloud, monkeypatch):
    import random

    from tfp_mlflow.cloud.schema import Tag

    names = []
    for _ in range(3):
        random.seed(0)                      # what seeding a training does before the next run is named
        with sqlite_cloud.record(Kind.RECOMMENDATION, {Tag.TARGET: "same"}) as run:
            names.append(sqlite_cloud.client.get_run(run.run_id).info.run_name)
    assert len(set(names)) == 3 and all(n.startswith("recommendation-same-") for n in names)
    project = sqlite_cloud.client.create_run(sqlite_cloud.experiment_id()).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", project)     # what `mlflow run` gives its entry point's command
    with sqlite_cloud.record(Kind.RECOMMENDATION, {Tag.TARGET: "linked"}) as run:
        created = run.run_id
    assert sqlite_cloud.client.get_run(created).data.tags[Tag.PROJECT_RUN] == project
    assert sqlite_cloud.client.get_run(project).data.tags[f"{Tag.CREATED_PREFIX}{created}"] == Kind.RECOMMENDATION
