"""Where a study can live: Optuna's RDB storage (SQLite) against MLflow's ``MlflowStorage`` in the cloud (on a SQLite
tracking store and behind a real ``mlflow server``), on the same work.

The objective is a cheap function of the trial's params (a few milliseconds plus ``--work`` seconds of sleep), so
what is measured is the storage, not training:

1. **Per trial**: seconds per trial of one worker, ``--trials`` trials, TPE; the ratio against the RDB storage of the
   same run.
2. **Several workers**: ``--workers`` processes share one study that holds ``--enqueued`` enqueued configurations
   and needs ``--trials`` finished trials; counted: finished trials, trial numbers given twice, enqueued
   configurations evaluated more than once (two workers took one waiting trial) or never, trials left RUNNING.
3. **A killed worker**: a worker is killed (SIGKILL) in the middle of a trial; another worker starts with a
   2-second heartbeat and runs two trials; does the dead worker's trial end FAIL and its configuration run again?

Prints a table (Markdown with ``--markdown``) for ``benchmarks/README.md``.

    python benchmarks/studies.py                       # about 3 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import optuna

BACKENDS = ("rdb-sqlite", "mlflow-sqlite", "mlflow-server")


def open_study_storage(backend: str, root: str, server_url: str, heartbeat: int | None = None):
    """The storage of ``backend`` (opened in the calling process; every worker opens its own)."""
    from tfp_mlflow.cloud import Cloud
    from tfp_mlflow.cloud.studies import mlflow_storage
    from tfp_mlflow.tune.storage import open_storage

    retry = None if heartbeat is None else optuna.storages.RetryFailedTrialCallback(max_retry=1)
    if backend == "rdb-sqlite":
        if heartbeat is None:
            return optuna.storages.RDBStorage(f"sqlite:///{root}/optuna.db")
        return open_storage(f"sqlite:///{root}/optuna.db", heartbeat, retry)
    uri = server_url if backend == "mlflow-server" else f"sqlite:///{root}/mlflow.db"
    return mlflow_storage(Cloud(uri, cache_dir=f"{root}/cache"), heartbeat=heartbeat, on_lost=retry)


def objective(work: float):
    def run(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        kind = trial.suggest_categorical("kind", ["a", "b", "c"])
        trial.set_user_attr("pid", os.getpid())
        time.sleep(work)
        return -(x - 0.3) ** 2 + (kind == "a") * 0.1
    return run


def _worker(backend: str, root: str, url: str, name: str, trials: int, work: float, heartbeat: int | None) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_study_storage(backend, root, url, heartbeat)
    study = optuna.load_study(study_name=name, storage=storage, sampler=optuna.samplers.TPESampler(seed=os.getpid()))
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    study.optimize(objective(work), callbacks=[optuna.study.MaxTrialsCallback(trials, states=finished)])
    if hasattr(storage, "flush_all_batches"):
        storage.flush_all_batches()


def per_trial(backend: str, root: str, url: str, trials: int) -> float:
    storage = open_study_storage(backend, root, url)
    study = optuna.create_study(study_name="speed", storage=storage, direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=0))
    started = time.perf_counter()
    study.optimize(objective(0.0), n_trials=trials)
    return (time.perf_counter() - started) / trials


def shared(backend: str, root: str, url: str, workers: int, trials: int, enqueued: int, work: float) -> dict:
    storage = open_study_storage(backend, root, url)
    study = optuna.create_study(study_name="shared", storage=storage, direction="maximize")
    configs = [{"x": round((i + 0.5) / enqueued, 6), "kind": "abc"[i % 3]} for i in range(enqueued)]
    for config in configs:
        study.enqueue_trial(config)
    if hasattr(storage, "flush_all_batches"):
        storage.flush_all_batches()
    context = mp.get_context("spawn")
    procs = [context.Process(target=_worker, args=(backend, root, url, "shared", trials, work, None))
             for _ in range(workers)]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(600)
    seconds = time.perf_counter() - started
    every = optuna.load_study(study_name="shared", storage=open_study_storage(backend, root, url)).get_trials()
    done = [t for t in every if t.state == optuna.trial.TrialState.COMPLETE]
    evaluated = Counter((round(t.params["x"], 6), t.params["kind"]) for t in done)
    keys = [(c["x"], c["kind"]) for c in configs]
    numbers = Counter(t.number for t in every)
    return {"finished": len(done), "numbers_given_twice": sum(n - 1 for n in numbers.values() if n > 1),
            "enqueued_twice": sum(evaluated[k] > 1 for k in keys),
            "enqueued_never": sum(evaluated[k] == 0 for k in keys),
            "left_running": sum(t.state == optuna.trial.TrialState.RUNNING for t in every),
            "left_waiting": sum(t.state == optuna.trial.TrialState.WAITING for t in every),
            "seconds": seconds}


def killed(backend: str, root: str, url: str) -> dict:
    storage = open_study_storage(backend, root, url, heartbeat=2)
    study = optuna.create_study(study_name="killed", storage=storage, direction="maximize")
    study.enqueue_trial({"x": 0.125, "kind": "b"})
    if hasattr(storage, "flush_all_batches"):
        storage.flush_all_batches()
    context = mp.get_context("spawn")
    victim = context.Process(target=_worker, args=(backend, root, url, "killed", 1, 120.0, 2))
    victim.start()
    deadline = time.time() + 120
    while time.time() < deadline:   # until the victim holds its trial
        trials = optuna.load_study(study_name="killed", storage=open_study_storage(backend, root, url)).get_trials()
        if any(t.state == optuna.trial.TrialState.RUNNING for t in trials):
            break
        time.sleep(0.5)
    time.sleep(3)
    os.kill(victim.pid, signal.SIGKILL)
    victim.join()
    time.sleep(7)    # more than three heartbeats
    _worker(backend, root, url, "killed", 2, 0.0, 2)
    trials = optuna.load_study(study_name="killed", storage=open_study_storage(backend, root, url)).get_trials()
    states = Counter(t.state.name for t in trials)
    rerun = sum(t.state == optuna.trial.TrialState.COMPLETE and round(t.params.get("x", -1), 6) == 0.125
                for t in trials)
    return {"states": dict(states), "dead_trial_failed": states.get("FAIL", 0) >= 1, "rerun": rerun >= 1,
            "left_running": states.get("RUNNING", 0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--enqueued", type=int, default=8)
    parser.add_argument("--work", type=float, default=0.5, help="seconds each shared trial sleeps")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    from tfp_mlflow.cloud.runs import configure_process
    from tfp_mlflow.testing.servers import LocalServer

    configure_process()
    rows = {}
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            server = LocalServer(Path(tmp) / "server").start() if backend == "mlflow-server" else None
            url = server.url if server else ""
            try:
                rows[backend] = {
                    "per_trial": statistics.median(per_trial(backend, tmp, url, args.trials) for _ in range(1)),
                    **shared(backend, tmp, url, args.workers, args.trials, args.enqueued, args.work),
                    "killed": killed(backend, tmp, url)}
            finally:
                if server:
                    server.stop()
        print(backend, rows[backend], file=sys.stderr, flush=True)
    base = rows.get("rdb-sqlite", {}).get("per_trial")
    head = ("storage", "s/trial (1 worker)", "vs RDB", f"finished of {args.trials} ({args.workers} workers)",
            "numbers twice", f"enqueued run twice / never (of {args.enqueued})", "left RUNNING",
            "killed worker's trial")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for backend, row in rows.items():
        dead = row["killed"]
        fate = ("failed and run again" if dead["dead_trial_failed"] and dead["rerun"] else
                f"stays RUNNING ({dead['left_running']})" if dead["left_running"] else str(dead["states"]))
        lines.append(f"| {backend} | {row['per_trial']:.3f} | {row['per_trial'] / base:.1f}x | {row['finished']} | "
                     f"{row['numbers_given_twice']} | {row['enqueued_twice']} / {row['enqueued_never']} | "
                     f"{row['left_running']} | {fate} |" if base else str(row))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
