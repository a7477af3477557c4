"""Query time of the knowledge cloud on a local `mlflow server --app-name tfp` with N contributed tasks.

For each N: contribute N tasks (fingerprints with the shipped spec's shape, random counts), then time a cold query
(empty local cache: download every fingerprint and prepare the stack), a warm query (the prepared stack is
memory-mapped from the cache) and the ranking alone, and the share of the warm query spent in MLflow calls. Then
the full recommendation computed by the server (``POST /tfp/api/recommend``, one upload) against the same computed
here (``tfp recommend`` without ``--server``), each cold (empty cache) and warm; then ``tfp cloud pack`` and a new
client's cold recommendation again, which reads the snapshot instead of every fingerprint.

With ``--concurrent``, at the largest N: that many clients at once (threads, each its own connection) send
``--requests`` recommendations each to the server (``--workers`` uvicorn workers); p50/p95/max latency per level,
and the server's memory (PSS of the process tree: shared pages counted once) before and after, which stays flat
when every worker keeps one memory-mapped stack instead of one copy per request. Results are logged to MLflow
(``--log``).

    python benchmarks/cloud.py [--tasks 100 1000] [--draws 300] [--workers 2 --concurrent 1 4 16]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from tfp_mlflow import Fingerprint, Task, default_spec, get_selector, rank_sources
from tfp_mlflow.cloud import Cloud
from tfp_mlflow.cloud.remote import recommend_on_server
from tfp_mlflow.recommend import recommend
from tfp_mlflow.testing.servers import LocalServer, tree_memory_mb


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


def server_recommend(url: str, body: bytes) -> float:
    """Seconds for one ``POST /tfp/api/recommend`` (the full recommendation, computed by the server)."""
    started = time.perf_counter()
    payload = recommend_on_server(url, body, top_k=3)
    elapsed = time.perf_counter() - started
    assert payload is not None and payload["ranking"], "the server has no tfp app"
    return elapsed


def client_recommend(url: str, cache: Path, target: Fingerprint) -> float:
    """Seconds for the same recommendation computed here (`tfp recommend` without --server)."""
    started = time.perf_counter()
    recommend(Cloud(url, cache_dir=cache), target, top_k=3, log=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of the server")
    parser.add_argument("--concurrent", type=int, nargs="*", default=[], help="concurrent clients, e.g. 1 4 16")
    parser.add_argument("--requests", type=int, default=4, help="recommendations per client per level")
    parser.add_argument("--log", default=None, help="MLflow tracking URI to log the figures to")
    args = parser.parse_args()
    levels: list[tuple[int, float, float, float, float, float, float]] = []
    rng = np.random.default_rng(0)
    target = fake_fingerprint(99_999, args.draws, rng)
    rows = []
    print(f"{'N':>5} {'contribute s':>12} {'cold s':>7} {'warm s':>7} {'ranking s':>9} {'MLflow share (warm)':>20}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        body = target.save(root / "target.npz").read_bytes()
        with LocalServer(root / "server", app_name="tfp", env={"TFP_CACHE_DIR": str(root / "server-cache")},
                         workers=args.workers) as srv:
            url = srv.url
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
                      f"{warm['ranking']:>9.3f} {100 * share:>19.0f}%   (warm: tasks {warm['search']:.2f} s, "
                      f"prepared stack from cache {warm['prepared']:.2f} s; cold: download + prepare "
                      f"{cold['prepared']:.2f} s)", flush=True)
                # The full recommendation, server-side (POST /tfp/api/recommend) against client-side.
                shutil.rmtree(root / "server-cache", ignore_errors=True)
                shutil.rmtree(root / "client", ignore_errors=True)
                row = (size, server_recommend(url, body), server_recommend(url, body),
                       client_recommend(url, root / "client", target), client_recommend(url, root / "client", target))
                # A new client once the cloud is packed (`tfp cloud pack`): one snapshot download.
                started = time.perf_counter()
                cloud.pack()
                pack_s = time.perf_counter() - started
                shutil.rmtree(root / "client-packed", ignore_errors=True)
                rows.append((*row, pack_s, client_recommend(url, root / "client-packed", target)))
            for clients in args.concurrent:
                levels.append(concurrent_level(url, body, srv.proc.pid, clients, args.requests))
    print("\nfull recommendation (top 3, all scenarios), server-side POST /tfp/api/recommend vs client-side:")
    print(f"{'N':>5} {'server cold s':>13} {'server warm s':>13} {'client cold s':>13} {'client warm s':>13} "
          f"{'pack s':>7} {'client cold, packed s':>21}")
    for size, server_cold, server_warm, client_cold, client_warm, pack_s, packed_cold in rows:
        print(f"{size:>5} {server_cold:>13.2f} {server_warm:>13.2f} {client_cold:>13.2f} {client_warm:>13.2f} "
              f"{pack_s:>7.1f} {packed_cold:>21.2f}")
    if levels:
        print(f"\nconcurrent recommendations at N = {max(args.tasks)} ({args.workers} server workers, "
              f"{args.requests} per client):")
        print(f"{'clients':>7} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'req/s':>7} {'server PSS MB before':>20} "
              f"{'after':>7}")
        for clients, p50, p95, worst, rate, before, after in levels:
            print(f"{clients:>7} {p50:>7.2f} {p95:>7.2f} {worst:>7.2f} {rate:>7.2f} {before:>20.0f} {after:>7.0f}")
    if args.log:
        log_figures(args, rows, levels)


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


def log_figures(args, rows: list, levels: list) -> None:
    import mlflow

    mlflow.set_tracking_uri(args.log)
    mlflow.set_experiment("tfp-benchmarks")
    with mlflow.start_run(run_name="cloud"):
        mlflow.log_params({"tasks": " ".join(map(str, args.tasks)), "draws": args.draws, "workers": args.workers,
                           "requests": args.requests})
        for size, server_cold, server_warm, client_cold, client_warm, pack_s, packed_cold in rows:
            mlflow.log_metrics({"server_cold_s": server_cold, "server_warm_s": server_warm,
                                "client_cold_s": client_cold, "client_warm_s": client_warm, "pack_s": pack_s,
                                "client_cold_packed_s": packed_cold}, step=size)
        for clients, p50, p95, worst, rate, _before, after in levels:
            mlflow.log_metrics({"concurrent_p50_s": p50, "concurrent_p95_s": p95, "concurrent_max_s": worst,
                                "concurrent_requests_per_s": rate, "server_pss_mb_after": after}, step=clients)


if __name__ == "__main__":
    main()
