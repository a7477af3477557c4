"""The knowledge cloud's cold paths on a local ``mlflow server --app-name tfp`` with N contributed tasks.

For each N (synthetic fingerprints with the shipped spec's shape), each figure the median of ``--repeats`` runs:

* **empty cache**: the server started with an empty cache: seconds to boot (MLflow's ``/health``), until it says it
  is ready (``/tfp/api/health``: it prepares in the background), and its first answer (``POST /tfp/api/recommend``,
  a full recommendation, top 3, every scenario) once ready; beside it the first answer of a server that is asked at
  once (the first user waits for the preparation).
* **restored cache**: the same server restarted over its cache: boot, ready, first answer.
* **new client**: a client with nothing cached, in a fresh process (``recommend_for`` on the target file, the
  import not counted): ranked on the server (the default for a tracking server) against ranked here (``--local``,
  reading every task).
* **after one task** / **after one outcome table**: the first answer after one new task (or one new pretraining
  outcome table of N rows), against the same with the prepared stack rebuilt whole (what every contribution cost
  before the stack was kept in parts).
* **warm**: the answer again.

With ``--concurrent``, at the largest N: that many clients at once send ``--requests`` recommendations each (p50,
p95, max latency, throughput, and the server's memory as PSS before and after). Results are logged to MLflow with
``--log``. ``--keep DIR`` builds the clouds there once and reuses them (contributing 1,000 tasks takes minutes).

    python benchmarks/cloud.py [--tasks 1000] [--repeats 3] [--keep DIR] [--workers 2 --concurrent 1 4 16]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from tfp_mlflow import Fingerprint, default_spec
from tfp_mlflow.cloud import Cloud
from tfp_mlflow.cloud.knowledge import Knowledge, KnowledgeRow
from tfp_mlflow.cloud.schema import KnowledgeKind
from tfp_mlflow.remote import recommend_on_server
from tfp_mlflow.testing.servers import LocalServer, tree_memory_mb

_NEW_CLIENT = """
import sys, time, json
started = time.perf_counter()
from tfp_mlflow.recommend import QueryOptions
from tfp_mlflow.workflows.recommending import recommend_for
from tfp_mlflow.cloud import Cloud
imported = time.perf_counter()
url, target, cache, local = sys.argv[1:5]
# As `tfp recommend TARGET` with MLFLOW_TRACKING_URI=url (ranked on the server), or with --local (ranked here).
cloud = Cloud(url, cache_dir=cache) if local == "local" else url
recommend_for(target, cloud, query=QueryOptions(top_k=3), log=False, local=local == "local")
print(json.dumps({"import": imported - started, "answer": time.perf_counter() - imported}))
"""


def fake_fingerprint(index: int, draws: int, rng: np.random.Generator) -> Fingerprint:
    spec = default_spec()
    m = spec.num_features
    counts = {v: rng.multinomial(draws, rng.dirichlet(np.full(b, 0.3)), size=m) for v, b in spec.variants.items()}
    return Fingerprint(counts=counts, feature_sum=rng.gamma(2.0, 1.0, m) * draws, num_draws=draws,
                       spec_id=spec.id, name=f"task_{index:05d}", keywords=("bench",), num_images=100 + index,
                       num_classes=2)


def server_recommend(url: str, body: bytes) -> float:
    """Seconds for one ``POST /tfp/api/recommend`` (the full recommendation, computed by the server)."""
    started = time.perf_counter()
    payload = recommend_on_server(url, body, top_k=3)
    elapsed = time.perf_counter() - started
    assert payload is not None and payload["ranking"], "the server has no tfp app"
    return elapsed


def until_ready(url: str, limit: float = 3600.0) -> float:
    """Seconds until ``/tfp/api/health`` says the server is ready."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        with urllib.request.urlopen(f"{url}/tfp/api/health", timeout=30) as response:
            if json.loads(response.read()).get("ready"):
                return time.perf_counter() - started
        time.sleep(0.2)
    raise TimeoutError(f"{url} was not ready in {limit:.0f} s")


def build(url: str, root: Path, size: int, draws: int) -> None:
    """Contribute tasks until the cloud holds ``size`` (three at a time)."""
    cloud = Cloud(url, cache_dir=root / "writer-cache")
    cloud.ensure_spec(default_spec())
    have = len(cloud.tasks())
    if have >= size:
        return
    print(f"contributing {size - have} tasks ...", flush=True)
    started = time.perf_counter()
    rng = np.random.default_rng(have)
    fingerprints = (fake_fingerprint(i, draws, rng) for i in range(have, size))
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        list(pool.map(cloud.contribute, fingerprints))
    print(f"  {time.perf_counter() - started:.0f} s", flush=True)


class Bench:
    """One cloud's server, restarted as each figure needs."""

    def __init__(self, root: Path, workers: int, target: Path) -> None:
        self.root, self.workers, self.target = root, workers, target
        self.body = target.read_bytes()
        self.cache = root / "server-cache"
        self.server: LocalServer | None = None

    def start(self) -> float:
        self.stop()
        started = time.perf_counter()
        self.server = LocalServer(self.root / "server", app_name="tfp", workers=self.workers,
                                  env={"TFP_CACHE_DIR": str(self.cache)}).start()
        return time.perf_counter() - started

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def answer(self) -> float:
        return server_recommend(self.url, self.body)

    def new_client(self, where: str) -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as cache:
            out = subprocess.run([sys.executable, "-c", _NEW_CLIENT, self.url, str(self.target), cache, where],
                                 capture_output=True, text=True, check=True,
                                 env={**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
        times = json.loads(out.stdout.strip().splitlines()[-1])
        return times["import"], times["answer"]

    def rebuild_stack(self) -> None:
        """What a contribution cost before the stack was kept in parts: the next query prepares it whole."""
        shutil.rmtree(self.cache / "cloud" / "prepared", ignore_errors=True)
        for listing in (self.cache / "cloud").glob("parts-*"):
            listing.unlink()


def cold_figures(bench: Bench, repeats: int) -> dict[str, float]:
    """Empty and restored cache: boot, ready, first answer; and the first answer of a server asked at once."""
    runs: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        runs.setdefault(key, []).append(value)
    for _ in range(repeats):
        bench.stop()
        shutil.rmtree(bench.cache, ignore_errors=True)
        add("empty: boot", bench.start())
        add("empty: ready", until_ready(bench.url))
        add("empty: first answer", bench.answer())
        add("restored: boot", bench.start())
        add("restored: ready", until_ready(bench.url))
        add("restored: first answer", bench.answer())
        if "empty, asked at once: first answer" not in runs:   # once: it costs what "empty: ready" does
            bench.stop()
            shutil.rmtree(bench.cache, ignore_errors=True)
            bench.start()
            add("empty, asked at once: first answer", bench.answer())
    return {key: statistics.median(values) for key, values in runs.items()}


def growth_figures(bench: Bench, size: int, repeats: int, draws: int) -> dict[str, float]:
    """New client, first answer after one task or one outcome table (kept in parts, and rebuilt whole), warm."""
    runs: dict[str, list[float]] = {}
    cloud = Cloud(bench.url, cache_dir=bench.root / "writer-cache")
    rng = np.random.default_rng(size + 7)
    bench.answer()
    sources = [t.name for t in cloud.tasks()]
    for repeat in range(repeats):
        for where in ("server", "local"):
            imported, answered = bench.new_client(where)
            runs.setdefault(f"new client ({where}): answer", []).append(answered)
            runs.setdefault("new client: import", []).append(imported)
        for rebuilt in (False, True):
            suffix = " (stack rebuilt whole)" if rebuilt else ""
            cloud.contribute(fake_fingerprint(10_000_000 + 2 * repeat + rebuilt + 100 * size, draws, rng))
            if rebuilt:
                bench.rebuild_stack()
            runs.setdefault(f"after one task{suffix}", []).append(bench.answer())
            target = sources[(2 * repeat + rebuilt) % len(sources)]
            rows = tuple(KnowledgeRow(source=s, repetition=0, balanced_accuracy=float(rng.uniform(0.5, 0.9)),
                                      held_out=200) for s in sources if s != target)
            cloud.add_knowledge(Knowledge(task=target, kind=KnowledgeKind.PRETRAINING, rows=rows))
            runs.setdefault(f"after one outcome table{suffix}", []).append(bench.answer())
        runs.setdefault("warm", []).append(bench.answer())
    return {key: statistics.median(values) for key, values in runs.items()}


def concurrent_level(url: str, body: bytes, pid: int, clients: int, requests: int) -> tuple:
    """``clients`` threads at once, ``requests`` recommendations each: latency p50/p95/max, throughput, and the
    server's memory before and after."""
    before = tree_memory_mb(pid, "Pss")
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(lambda _: server_recommend(url, body), range(clients * requests)))
    wall = time.perf_counter() - started
    return (clients, float(np.percentile(latencies, 50)), float(np.percentile(latencies, 95)), max(latencies),
            len(latencies) / wall, before, tree_memory_mb(pid, "Pss"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[1000])
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of the server")
    parser.add_argument("--concurrent", type=int, nargs="*", default=[], help="concurrent clients, e.g. 1 4 16")
    parser.add_argument("--requests", type=int, default=4, help="recommendations per client per level")
    parser.add_argument("--keep", type=Path, default=None, help="build the clouds here once and reuse them")
    parser.add_argument("--log", default=None, help="MLflow tracking URI to log the figures to")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    figures: dict[int, dict[str, float]] = {}
    levels: list[tuple] = []
    with tempfile.TemporaryDirectory() as tmp:
        home = args.keep or Path(tmp)
        target = fake_fingerprint(99_999, args.draws, np.random.default_rng(0)).save(home / "target.npz")
        for size in sorted(args.tasks):
            bench = Bench(home / f"n{size}", args.workers, target)
            try:
                bench.start()
                build(bench.url, bench.root, size, args.draws)
                figures[size] = cold_figures(bench, args.repeats)
                figures[size].update(growth_figures(bench, size, args.repeats, args.draws))
                if size == max(args.tasks):
                    assert bench.server is not None and bench.server.proc is not None
                    levels = [concurrent_level(bench.url, bench.body, bench.server.proc.pid, c, args.requests)
                              for c in args.concurrent]
            finally:
                bench.stop()
            report(size, figures[size])
    for clients, p50, p95, worst, rate, before, after in levels:
        print(f"{clients:>3} clients: p50 {p50:.2f} s, p95 {p95:.2f} s, max {worst:.2f} s, {rate:.2f} req/s, "
              f"server PSS {before:.0f} -> {after:.0f} MB")
    if args.log:
        log_figures(args, figures)


def report(size: int, figures: dict[str, float]) -> None:
    warm = figures["warm"]
    print(f"\n{size:,} tasks (median of the repeats; warm {warm:.2f} s)")
    for key, value in figures.items():
        extra = f"   (+{value - warm:.2f} s over warm)" if key.startswith("after") else ""
        print(f"  {key:<52} {value:>8.2f} s{extra}", flush=True)


def log_figures(args, figures: dict[int, dict[str, float]]) -> None:
    import re

    import mlflow

    mlflow.set_tracking_uri(args.log)
    mlflow.set_experiment("tfp-benchmarks")
    with mlflow.start_run(run_name="cloud"):
        mlflow.log_params({"tasks": " ".join(map(str, args.tasks)), "draws": args.draws, "workers": args.workers,
                           "repeats": args.repeats})
        for size, values in figures.items():
            mlflow.log_metrics({re.sub(r"[^A-Za-z0-9_]+", "_", k).strip("_") + "_s": v for k, v in values.items()},
                               step=size)


if __name__ == "__main__":
    main()
