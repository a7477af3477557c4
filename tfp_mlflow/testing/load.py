"""Load on a cloud: several processes contribute at once while another one queries, then everything is checked.

Used by ``benchmarks/load.py`` (8 processes x 50 tasks) and by the tests (a smaller run). Each contributor writes
deterministic tasks (so the checker knows every byte to expect) and retries a failed contribution, as a real client
would; the querier recommends in a loop and checks that every task it is shown is whole. Torch-free.
"""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tfp_mlflow.cloud.knowledge import Knowledge, KnowledgeRow
from tfp_mlflow.cloud.schema import KnowledgeKind
from tfp_mlflow.errors import BadInputError, first_line
from tfp_mlflow.fingerprint import Fingerprint
from tfp_mlflow.spec import FingerprintSpec

__all__ = ["LoadReport", "run_load", "load_task"]

RETRIES = 5


def load_task(spec: FingerprintSpec, process: int, index: int, draws: int = 200) -> Fingerprint:
    """The deterministic fingerprint contributor ``process`` writes as its ``index``-th task."""
    rng = np.random.default_rng([process, index])
    counts = {v: rng.multinomial(draws, rng.dirichlet(np.full(b, 0.5)), size=spec.num_features)
              for v, b in sorted(spec.variants.items())}
    return Fingerprint(counts=counts, feature_sum=rng.gamma(2.0, 1.0, spec.num_features) * draws, num_draws=draws,
                       spec_id=spec.id, name=f"load_p{process}_t{index:03d}", keywords=("load", f"p{process}"),
                       num_images=50 + index, num_classes=2)


def _sha(fingerprint: Fingerprint) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        return hashlib.sha256(fingerprint.save(Path(tmp) / "f.npz").read_bytes()).hexdigest()


def _contributor(uri: str, spec_path: str, cache: str, process: int, tasks: int, queue) -> None:
    from tfp_mlflow.cloud import Cloud

    spec = FingerprintSpec.load(spec_path)
    cloud = Cloud(uri, cache_dir=cache)
    done, errors, messages = 0, 0, []
    started = time.perf_counter()
    for index in range(tasks):
        fingerprint = load_task(spec, process, index)
        knowledge = [Knowledge(fingerprint.name, KnowledgeKind.ARCHITECTURE,
                               (KnowledgeRow(architecture="resnet18", balanced_accuracy=0.5 + index / 1000),))]
        for attempt in range(RETRIES):
            try:
                cloud.contribute(fingerprint, knowledge=knowledge, spec=spec)
                done += 1
                break
            except Exception as exc:  # counted and retried: a contribution is atomic and can be re-run
                errors += 1
                messages.append(f"{type(exc).__name__}: {first_line(exc, 200)}")
                time.sleep(0.2 * (attempt + 1))
    queue.put({"role": "contributor", "done": done, "errors": errors, "messages": messages[:5],
               "seconds": time.perf_counter() - started})


def _querier(uri: str, cache: str, stop, queue) -> None:
    from tfp_mlflow.cloud import Cloud
    from tfp_mlflow.recommend import recommend

    cloud = Cloud(uri, cache_dir=cache)
    latencies, errors, half_written, messages = [], 0, 0, []
    probe = None
    while not stop.is_set():
        started = time.perf_counter()
        try:
            tasks = cloud.tasks()
            for task in tasks:
                # A task shown to readers must be whole: its fingerprint downloads and matches its checksum.
                if not task.has_fingerprint or task.num_images <= 0:
                    half_written += 1
            if tasks:
                try:
                    cloud.fingerprint(max(tasks, key=lambda t: t.name))   # a recent one, checksum-verified
                except Exception:
                    half_written += 1
                probe = probe or cloud.fingerprint(tasks[0])
                recommend(cloud, probe, name="load_probe", top_k=3, log=False)
            latencies.append(time.perf_counter() - started)
        except BadInputError:
            latencies.append(time.perf_counter() - started)
        except Exception as exc:
            errors += 1
            messages.append(f"{type(exc).__name__}: {first_line(exc, 200)}")
        time.sleep(0.05)
    queue.put({"role": "querier", "latencies": latencies, "errors": errors, "half_written": half_written,
               "messages": messages[:5]})


@dataclass
class LoadReport:
    """What a load run measured; :meth:`summary` prints it."""

    processes: int
    tasks_per_process: int
    seconds: float
    contributed: int
    contribution_errors: int
    present: int
    duplicates: int
    wrong: int
    query_latencies: list[float] = field(default_factory=list)
    query_errors: int = 0
    half_written_seen: int = 0
    messages: list[str] = field(default_factory=list)

    @property
    def expected(self) -> int:
        return self.processes * self.tasks_per_process

    @property
    def lost(self) -> int:
        return self.expected - self.present

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.query_latencies, q)) if self.query_latencies else float("nan")

    def summary(self) -> str:
        return (f"{self.processes} processes x {self.tasks_per_process} tasks in {self.seconds:.1f} s: "
                f"{self.contributed / self.seconds:.2f} contributions/s, {self.contribution_errors} retried errors; "
                f"present {self.present}/{self.expected} (lost {self.lost}, duplicates {self.duplicates}, "
                f"wrong {self.wrong}); queries {len(self.query_latencies)}: p50 {self.percentile(50):.2f} s, "
                f"p95 {self.percentile(95):.2f} s, errors {self.query_errors}, half-written seen "
                f"{self.half_written_seen}")


def run_load(uri: str, spec: FingerprintSpec, *, processes: int = 8, tasks_per_process: int = 50,
             workdir: str | os.PathLike | None = None) -> LoadReport:
    """Contribute ``processes x tasks_per_process`` tasks concurrently while querying, then check the cloud."""
    from tfp_mlflow.cloud import Cloud

    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        spec_path = str(spec.save(root / "spec.npz"))
        Cloud(uri, cache_dir=root / "setup").ensure_spec(spec)
        queue, stop = context.Queue(), context.Event()
        querier = context.Process(target=_querier, args=(uri, str(root / "querier"), stop, queue))
        querier.start()
        started = time.perf_counter()
        contributors = [context.Process(target=_contributor, args=(uri, spec_path, str(root / f"c{p}"), p,
                                                                    tasks_per_process, queue))
                        for p in range(processes)]
        for proc in contributors:
            proc.start()
        results = [queue.get(timeout=3600) for _ in contributors]
        seconds = time.perf_counter() - started
        stop.set()
        results.append(queue.get(timeout=600))
        for proc in [*contributors, querier]:
            proc.join(timeout=60)
        cloud = Cloud(uri, cache_dir=root / "checker")
        tasks = [t for t in cloud.tasks() if t.name.startswith("load_p")]
        names = [t.name for t in tasks]
        wrong = 0
        for task in tasks:
            process, index = (int(part[1:]) for part in task.name.removeprefix("load_").split("_"))
            try:
                expected = _sha(load_task(spec, process, index))
                if task.fingerprint_sha256 != expected or cloud.fingerprint(task).num_draws <= 0:
                    wrong += 1
            except Exception:
                wrong += 1
                traceback.print_exc()
    contributor_results = [r for r in results if r["role"] == "contributor"]
    query = next(r for r in results if r["role"] == "querier")
    return LoadReport(processes=processes, tasks_per_process=tasks_per_process, seconds=seconds,
                      contributed=sum(r["done"] for r in contributor_results),
                      contribution_errors=sum(r["errors"] for r in contributor_results),
                      present=len(set(names)), duplicates=len(names) - len(set(names)), wrong=wrong,
                      query_latencies=query["latencies"], query_errors=query["errors"],
                      half_written_seen=query["half_written"],
                      messages=[m for r in results for m in r["messages"]][:10])
