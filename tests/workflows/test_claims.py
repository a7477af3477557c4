"""Work shared through an Optuna storage (`tfp seed --storage`): SQLite here, as on one machine (the same code
runs on PostgreSQL, where Optuna locks the trial row), and the cloud's own MLflow store (`--storage mlflow`)."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import optuna
import pytest

from tfp_mlflow.cloud import Cloud
from tfp_mlflow.cloud.studies import MLFLOW_STORAGE, mlflow_storage
from tfp_mlflow.testing.stores import sqlite_uri
from tfp_mlflow.workflows.claims import claim_each

WORKER = """
import sys, time
from tfp_mlflow.cloud import Cloud
from tfp_mlflow.workflows.claims import claim_each
def hang(index):
    print(index, flush=True)
    time.sleep(3600)
cloud = Cloud(sys.argv[3], cache_dir=sys.argv[4])
claim_each([f"dataset{i}" for i in range(int(sys.argv[2]))], sys.argv[1], 1, hang, print, cloud=cloud)
"""


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("mlflow", marks=pytest.mark.slow)])
def test_workers_claim_each_item_once_and_take_over_a_dead_workers(tmp_path, backend):
    """Several workers on one Optuna storage: each item is worked on by exactly one live worker, and the item of a
    worker killed mid-way (silent for three heartbeats) is taken over."""
    workers, count = 2, 6
    storage = f"sqlite:///{tmp_path / 'claims.db'}" if backend == "sqlite" else MLFLOW_STORAGE
    cloud = Cloud(sqlite_uri(tmp_path / "cloud" / "mlflow.db"), cache_dir=tmp_path / "cache")
    dead = subprocess.Popen([sys.executable, "-c", WORKER, storage, str(count), cloud.uri, str(tmp_path / "cache")],
                            stdout=subprocess.PIPE, text=True)
    claimed = int(dead.stdout.readline())            # it holds an item, then dies without a word
    dead.kill()
    dead.wait()
    keys = [f"dataset{i}" for i in range(count)]
    done: list[tuple[str, int]] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        def work(index: int) -> None:
            time.sleep(0.3)
            with lock:
                done.append((name, index))
        claim_each(keys, storage, 1, work, lambda line: None, cloud=cloud)

    threads = [threading.Thread(target=worker, args=(f"w{i}",), daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(index for _, index in done) == list(range(count)), done   # each once, the dead one's too
    assert len({name for name, _ in done}) == workers                               # the work was shared
    opened = mlflow_storage(cloud) if backend == "mlflow" else storage
    study = optuna.load_study(study_name=optuna.get_all_study_names(opened)[0], storage=opened)
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert [t.user_attrs["item"] for t in failed] == [claimed]
