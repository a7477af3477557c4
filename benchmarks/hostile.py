"""Peak memory of hostile fingerprints: `tfp inspect` and a server upload, against a normal fingerprint.

The hostile file is the largest this script can construct within the server's 32 MB upload limit and the 1 GiB
declared-size limit: a 1 MB `.npz` (deflated zeros) whose `counts_large` member declares shape (1280, 100000) of
int64 (1.02 GB). Before headers were checked, `tfp inspect` peaked at 2.1 GB on it and an upload at 2.45 GB.
Printed: peak RSS of `tfp inspect` (a fresh process each) and the server's peak RSS (VmHWM of the process tree)
after a normal upload and after three hostile uploads at once.

    .venv/bin/python benchmarks/hostile.py          # about a minute
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the (larger) parent.
INSPECT = """
import sys
from tfp_mlflow.cli import main
try:
    main(["inspect", sys.argv[1]])
finally:
    status = open("/proc/self/status").read().splitlines()
    print(next(l.split()[1] for l in status if l.startswith("VmHWM")), file=sys.stderr)
"""


def inspect_peak_mb(path: Path) -> tuple[int, str]:
    result = subprocess.run([sys.executable, "-c", INSPECT, str(path)], capture_output=True, text=True)
    said = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
    return int(result.stderr.strip().splitlines()[-1]) // 1024, (said[0][:110] if said else "read, exit 0")


def tree_peak_mb(pid: int) -> int:
    """Largest VmHWM (peak resident set) over a process and its descendants, in MB."""
    from tfp_mlflow.testing.servers import tree_memory_mb

    return tree_memory_mb(pid, "VmHWM", max)


def upload(url: str, body: bytes) -> int:
    request = urllib.request.Request(f"{url}/tfp/api/recommend", data=body, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    from tfp_mlflow import FingerprintBuilder
    from tfp_mlflow.cloud import Cloud
    from tfp_mlflow.spec import default_spec
    from tfp_mlflow.testing.servers import LocalServer

    spec = default_spec()
    m = spec.num_features
    home = Path(tempfile.mkdtemp(prefix="tfp-hostile-"))
    rng = np.random.default_rng(0)
    features = rng.normal(size=(10_000, m)) * (spec.hi - spec.lo) / 4 + (spec.hi + spec.lo) / 2

    def honest(name: str, shift: float):
        builder = FingerprintBuilder(spec)
        builder.update(features + shift)
        return builder.build(name=name, keywords=("x-ray",), num_images=500, num_classes=2)

    normal = honest("normal", 0.0).save(home / "normal.npz")
    meta = json.loads(str(np.load(normal)["meta"]))
    started = time.perf_counter()
    hostile = home / "hostile.npz"
    np.savez_compressed(hostile, counts_small=np.zeros((m, 100), dtype=np.int64), feature_sum=np.zeros(m),
                        counts_large=np.zeros((m, 100_000), dtype=np.int64), meta=np.array(json.dumps(meta)))
    print(f"files: normal {normal.stat().st_size / 1e6:.2f} MB; hostile {hostile.stat().st_size / 1e6:.2f} MB "
          f"declaring {m * 100_000 * 8 / 1e9:.2f} GB (built in {time.perf_counter() - started:.0f} s)")

    rows = []
    for label, path in (("normal", normal), ("hostile", hostile)):
        peak, outcome = inspect_peak_mb(path)
        rows.append(("tfp inspect", label, peak, outcome))

    with LocalServer(home / "server", app_name="tfp", env={"TFP_CACHE_DIR": str(home / "server-cache")}) as server:
        cloud = Cloud(server.url, cache_dir=home / "client-cache")
        for i in range(4):
            cloud.contribute(honest(f"source_{i}", 0.1 * (i + 1)), spec=spec)
        pid = server.proc.pid
        upload(server.url, b"")   # warm: the app's imports
        rows.append(("server", "idle, after start", tree_peak_mb(pid), ""))
        status = upload(server.url, normal.read_bytes())
        rows.append(("server", "after a normal upload", tree_peak_mb(pid), f"HTTP {status}"))
        statuses: list[int] = []
        body = hostile.read_bytes()
        threads = [threading.Thread(target=lambda: statuses.append(upload(server.url, body))) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        rows.append(("server", "after 3 hostile uploads at once", tree_peak_mb(pid),
                     "HTTP " + ",".join(map(str, sorted(statuses)))))
    print("| process | input | peak RSS (MB) | outcome |\n|---|---|---|---|")
    for process, label, peak, outcome in rows:
        print(f"| {process} | {label} | {peak:,} | {outcome} |")


if __name__ == "__main__":
    main()
