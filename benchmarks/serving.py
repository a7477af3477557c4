"""A server under hostile load: peak memory for hostile stored objects, and another client's latency while one
client uploads in parallel.

1. **Stored objects, read by the server.** A cloud on ``mlflow server --app-name tfp`` gets a conforming task with
   knowledge; a fresh server process answers ``/tfp/api/tasks``, the task's page and a recommendation, and its peak
   RSS (VmHWM over the process tree) is printed. Then one hostile object of each kind is written with MLflow's API
   alone (correct checksum tags, so only the bounds can stop it): a 21 MiB knowledge table, a spec run met before
   the real one whose file declares 1 GB, a 96 MiB fingerprint artifact. A fresh server process answers the same
   requests plus the hostile task's page, and its peak is printed beside the first.
2. **Parallel uploads.** One client keeps 16 uploads in flight (``POST /tfp/api/recommend``), each either a
   maximal body (32 MiB, refused once read) or a valid fingerprint (a whole recommendation each), while another
   client asks ``/tfp/api/tasks`` in a loop. Printed: that client's median and 95th-percentile latency against the
   same server idle, with the upload gate (``TFP_UPLOADS_PER_WORKER=2``, the default) and without it (64).

    .venv/bin/python benchmarks/serving.py            # about 5 minutes on 2 cores
    .venv/bin/python benchmarks/serving.py --part uploads --seconds 20
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import statistics
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

ERRORS: dict[int, str] = {}


def call(url: str, data: bytes | None = None) -> int:
    """The HTTP status of a request; the first error message of each status is kept in ``ERRORS``."""
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        ERRORS.setdefault(exc.code, exc.read()[:200].decode(errors="replace"))
        return exc.code


def log_raw(client, experiment: str, tags: dict, artifact: str, data: bytes, start_time: int | None = None) -> None:
    """A run written with MLflow's API alone, its checksum tag correct."""
    from tfp_mlflow.cloud.schema import Tag, sha256_tag

    run = client.create_run(experiment, tags=tags, start_time=start_time)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / artifact.rsplit("/", 1)[1]
        local.write_bytes(data)
        client.log_artifact(run.info.run_id, str(local), artifact.rsplit("/", 1)[0])
    digest = hashlib.sha256(data).hexdigest()
    client.set_tag(run.info.run_id, sha256_tag(artifact), digest)
    if artifact.endswith("fingerprint.npz"):
        client.set_tag(run.info.run_id, Tag.FINGERPRINT_SHA256, digest)
    client.set_tag(run.info.run_id, Tag.COMPLETE, "1")


def stored_objects(home: Path) -> list[tuple[str, int, str]]:
    from tfp_mlflow import Fingerprint
    from tfp_mlflow.cloud import Cloud, Knowledge, KnowledgeKind, KnowledgeRow
    from tfp_mlflow.cloud.schema import Kind, Tag
    from tfp_mlflow.spec import default_spec
    from tfp_mlflow.testing.servers import LocalServer, tree_memory_mb

    data = Path(__import__("tfp_mlflow").__file__).parent / "data"
    example = Fingerprint.load(data / "examples" / "radiograph_2.npz")
    spec = default_spec()
    upload = (data / "examples" / "dermoscopy_2.npz").read_bytes()
    rows = tuple(KnowledgeRow(architecture=f"model_{i % 50}", balanced_accuracy=0.5 + (i % 400) / 1000,
                              repetition=i % 3) for i in range(10_000))
    root = home / "stored"
    answers = []

    def serve(label: str, pages: list[str]) -> None:
        with LocalServer(root, app_name="tfp", env={"TFP_CACHE_DIR": str(home / f"cache-{len(answers)}")}) as srv:
            statuses = [call(f"{srv.url}/tfp/api/tasks")]
            statuses += [call(f"{srv.url}/tfp/api/tasks/{page}") for page in pages]
            statuses.append(call(f"{srv.url}/tfp/api/recommend?top_k=3", upload))
            answers.append((label, tree_memory_mb(srv.proc.pid, "VmHWM", max), ",".join(map(str, statuses))))
            print(f"  {label}: {answers[-1][1]} MB, HTTP {answers[-1][2]} {ERRORS}", flush=True)

    with LocalServer(root, app_name="tfp", env={"TFP_CACHE_DIR": str(home / "cache-writer")}) as srv:
        cloud = Cloud(srv.url, cache_dir=home / "writer")
        cloud.contribute(example, spec=spec, knowledge=[Knowledge(example.name, KnowledgeKind.ARCHITECTURE, rows)])
        cloud.contribute(Fingerprint.load(data / "examples" / "fundus_2.npz"), spec=spec)
    serve("conforming: a task with 10,000 knowledge rows", [example.name])

    with LocalServer(root, app_name="tfp", env={"TFP_CACHE_DIR": str(home / "cache-writer")}) as srv:
        cloud = Cloud(srv.url, cache_dir=home / "writer")
        experiment, client = cloud.experiment_id(), cloud.client
        big = json.dumps({"task": "victim", "kind": "architecture", "rows": [
            {"architecture": "resnet18", "balanced_accuracy": 0.9, "repetition": 0}] * 300_000}).encode()
        cloud.contribute(None, name="victim", keywords=["x-ray"], num_images=10, num_classes=2)
        log_raw(client, experiment, {Tag.KIND: Kind.KNOWLEDGE, Tag.TASK: "victim", Tag.KNOWLEDGE: "architecture",
                                     Tag.CONTRIBUTOR: "mallory"}, "knowledge/architecture.json", big)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, lo=np.zeros(64_000_000), hi=np.zeros(64_000_000), spec=np.array("{}"))
        log_raw(client, experiment, {Tag.KIND: Kind.SPEC, Tag.SPEC_ID: spec.id}, "spec/spec.npz",
                buffer.getvalue(), start_time=1)
        log_raw(client, experiment, {Tag.KIND: Kind.TASK, Tag.TASK: "bloated", Tag.CONTRIBUTOR: "mallory",
                                     Tag.KEYWORDS: "x-ray", Tag.SHAREABLE: "false"},
                "fingerprint/fingerprint.npz", np.random.default_rng(0).bytes(96 * 2**20))
    serve("with a 21 MiB table, a 1 GB-declaring spec, a 96 MiB fingerprint", [example.name, "victim", "bloated"])
    return answers


def parallel_uploads(home: Path, seconds: float, clients: int) -> list[tuple[str, str, float, float, int, int]]:
    from tfp_mlflow import FingerprintBuilder
    from tfp_mlflow.cloud import Cloud
    from tfp_mlflow.spec import default_spec
    from tfp_mlflow.testing.servers import LocalServer

    spec = default_spec()
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2_000, spec.num_features)) * (spec.hi - spec.lo) / 4 + (spec.hi + spec.lo) / 2

    def fingerprint(name: str, shift: float):
        builder = FingerprintBuilder(spec)
        builder.update(features + shift)
        return builder.build(name=name, keywords=("x-ray",), num_images=500, num_classes=2)

    valid_path = fingerprint("upload", 0.05).save(home / "upload.npz")
    bodies = {"maximal (32 MiB)": rng.bytes(32 * 2**20), "valid fingerprint": valid_path.read_bytes()}
    root = home / "uploads"
    with LocalServer(root, app_name="tfp", env={"TFP_CACHE_DIR": str(home / "cache-seed")}) as srv:
        cloud = Cloud(srv.url, cache_dir=home / "seed")
        for i in range(20):
            cloud.contribute(fingerprint(f"source_{i}", 0.02 * i), spec=spec)
    rows = []
    for gate in (2, 64):
        env = {"TFP_CACHE_DIR": str(home / f"cache-gate-{gate}"), "TFP_UPLOADS_PER_WORKER": str(gate)}
        with LocalServer(root, app_name="tfp", env=env) as srv:
            tasks = f"{srv.url}/tfp/api/tasks"
            call(f"{srv.url}/tfp/api/recommend", bodies["valid fingerprint"])   # warm: imports, spec, stack

            def latencies(duration: float) -> list[float]:
                out, end = [], time.perf_counter() + duration
                while time.perf_counter() < end:
                    started = time.perf_counter()
                    call(tasks)
                    out.append(time.perf_counter() - started)
                return out

            idle = latencies(seconds / 2)
            for kind, body in bodies.items():
                stop, done = threading.Event(), []

                def uploader():
                    while not stop.is_set():
                        done.append(call(f"{srv.url}/tfp/api/recommend", body))

                threads = [threading.Thread(target=uploader, daemon=True) for _ in range(clients)]
                for thread in threads:
                    thread.start()
                time.sleep(2)   # every upload in flight
                busy = latencies(seconds)
                stop.set()
                for thread in threads:
                    thread.join()
                p50 = statistics.median(busy) / statistics.median(idle)
                p95 = np.percentile(busy, 95) / np.percentile(idle, 95)
                rows.append((f"{gate}" + (" (default)" if gate == 2 else ""), kind, p50, p95, len(busy), len(done)))
                print(f"  gate {gate}, {kind}: /tfp/api/tasks idle p50 {statistics.median(idle) * 1000:.0f} ms, "
                      f"busy p50 {statistics.median(busy) * 1000:.0f} ms ({p50:.1f}x), p95 x{p95:.1f}; "
                      f"{len(done)} uploads answered ({', '.join(sorted(set(map(str, done))))})", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("stored", "uploads", "both"), default="both")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each loaded measurement lasts")
    parser.add_argument("--clients", type=int, default=16, help="uploads kept in flight")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="tfp-serving-"))
    if args.part in ("stored", "both"):
        answers = stored_objects(home)
        print("| server reads | peak RSS (MB) | HTTP |\n|---|---|---|")
        for label, peak, statuses in answers:
            print(f"| {label} | {peak:,} | {statuses} |")
    if args.part in ("uploads", "both"):
        rows = parallel_uploads(home, args.seconds, args.clients)
        print(f"| uploads per worker | {args.clients} uploads in flight | /tfp/api/tasks p50 vs idle | p95 vs idle "
              f"| requests | uploads answered |\n|---|---|---|---|---|---|")
        for gate, kind, p50, p95, n, uploads in rows:
            print(f"| {gate} | {kind} | {p50:.1f}x | {p95:.1f}x | {n} | {uploads} |")


if __name__ == "__main__":
    main()
