"""Query time of the knowledge cloud on a local `mlflow server` with N contributed tasks.

For each N: contribute N tasks (fingerprints with the shipped spec's shape, random counts), then time a cold query
(empty local cache: download every fingerprint and prepare the stack), a warm query (the prepared stack is
memory-mapped from the cache) and the ranking alone, and the share of the warm query spent in MLflow calls.

    python benchmarks/cloud.py [--tasks 100 1000] [--draws 300]
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from tfp_mlflow import Fingerprint, Task, default_spec, get_selector, rank_sources
from tfp_mlflow.cloud import Cloud


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [os.path.join(os.path.dirname(sys.executable), "mlflow"), "server", "--backend-store-uri",
               f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"), "--host",
               "127.0.0.1", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                return proc, url
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("mlflow server did not start")


def fake_fingerprint(index: int, draws: int, rng: np.random.Generator) -> Fingerprint:
    spec = default_spec()
    m = spec.num_features
    counts = {v: rng.multinomial(draws, rng.dirichlet(np.full(b, 0.3)), size=m) for v, b in spec.variants.items()}
    return Fingerprint(counts=counts, feature_sum=rng.gamma(2.0, 1.0, m) * draws, num_draws=draws,
                       spec_id=spec.id, name=f"task_{index:05d}", keywords=("bench",), num_images=100 + index,
                       num_classes=2)


def query(cloud: Cloud, target: Fingerprint) -> dict[str, float]:
    """One recommendation's ranking, timed by stage (as `recommend` runs it)."""
    selector = get_selector("bkld-small-target")
    timings = {}
    started = time.perf_counter()
    tasks = cloud.tasks()
    timings["search"] = time.perf_counter() - started
    started = time.perf_counter()
    prepared = cloud.prepared(selector, tasks)
    timings["prepared"] = time.perf_counter() - started
    started = time.perf_counter()
    rank_sources(selector, Task.from_fingerprint(target), prepared, top_k=3)
    timings["ranking"] = time.perf_counter() - started
    timings["total"] = sum(timings.values())
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--draws", type=int, default=300)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    target = fake_fingerprint(99_999, args.draws, rng)
    print(f"{'N':>5} {'contribute s':>12} {'cold s':>7} {'warm s':>7} {'ranking s':>9} {'MLflow share (warm)':>20}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        proc, url = start_server(root / "server")
        try:
            contributed = 0
            cloud = Cloud(url, cache_dir=root / "cache")
            cloud.ensure_spec(default_spec())
            for size in sorted(args.tasks):
                started = time.perf_counter()
                while contributed < size:
                    cloud.contribute(fake_fingerprint(contributed, args.draws, rng))
                    contributed += 1
                contribute_s = time.perf_counter() - started
                shutil.rmtree(root / "cache", ignore_errors=True)
                cold = query(Cloud(url, cache_dir=root / "cache"), target)
                warm = query(Cloud(url, cache_dir=root / "cache"), target)
                share = warm["search"] / warm["total"]
                print(f"{size:>5} {contribute_s:>12.1f} {cold['total']:>7.2f} {warm['total']:>7.2f} "
                      f"{warm['ranking']:>9.3f} {100 * share:>19.0f}%   (warm: search {warm['search']:.2f} s, "
                      f"prepared stack from cache {warm['prepared']:.2f} s; cold: download + prepare "
                      f"{cold['prepared']:.2f} s)", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
