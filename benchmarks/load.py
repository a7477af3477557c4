"""Concurrent contributors on one `mlflow server`, SQLite-backed and PostgreSQL-backed, while a reader queries.

8 processes contribute 50 tasks each (deterministic fingerprints of the shipped spec's shape, one knowledge run
each) while another process recommends in a loop; then every task is checked to be present exactly once and
byte-identical to what was sent. Prints contributions/s, query latency percentiles, retried errors and losses.

    python benchmarks/load.py [--processes 8] [--tasks 50] [--backends sqlite postgresql]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tfp_mlflow.spec import default_spec
from tfp_mlflow.testing.load import run_load
from tfp_mlflow.testing.servers import LocalPostgres, LocalServer, postgres_binaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=50, help="tasks per process")
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    args = parser.parse_args()
    spec = default_spec()
    print(f"{'backend':<11} {'tasks':>5} {'seconds':>8} {'contrib/s':>9} {'retried':>7} {'lost':>4} {'dup':>3} "
          f"{'wrong':>5} {'queries':>7} {'p50 s':>6} {'p95 s':>6} {'q err':>5} {'half':>4}")
    for backend in args.backends:
        with tempfile.TemporaryDirectory() as tmp:
            postgres = None
            if backend == "postgresql":
                if postgres_binaries() is None:
                    print("postgresql: not installed (apt-get install postgresql), skipped")
                    continue
                postgres = LocalPostgres(databases=("mlflow",)).start()
            try:
                with LocalServer(Path(tmp) / "server", backend_store_uri=postgres.uri() if postgres else None) as srv:
                    report = run_load(srv.url, spec, processes=args.processes, tasks_per_process=args.tasks,
                                      workdir=tmp)
            finally:
                if postgres:
                    postgres.stop()
        print(f"{backend:<11} {report.expected:>5} {report.seconds:>8.1f} {report.contributed / report.seconds:>9.2f} "
              f"{report.contribution_errors:>7} {report.lost:>4} {report.duplicates:>3} {report.wrong:>5} "
              f"{len(report.query_latencies):>7} {report.percentile(50):>6.2f} {report.percentile(95):>6.2f} "
              f"{report.query_errors:>5} {report.half_written_seen:>4}", flush=True)
        for message in report.messages:
            print(f"  {backend}: {message}")


if __name__ == "__main__":
    main()
