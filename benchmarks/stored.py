"""Peak memory of a reader meeting the worst stored object of each kind, against a conforming one.

A SQLite cloud gets, beside a conforming task, one hostile object of each kind written with MLflow's API alone (as
an account that bypasses tfp would), each with a correct checksum tag so that only the bounds can stop it:

* a knowledge table of 21 MiB (300,000 rows), against a conforming one of 10,000 rows;
* a spec run, older than the real one (so a reader meets it first), whose 1 MB file declares a 1 GB array;
* a fingerprint artifact of 96 MiB on a task run, against the conforming 1.2 MB example.

Each read runs in a fresh process (``tfp_mlflow.cloud.Cloud``, the code the server's routes call), which prints its
peak RSS (VmHWM) and what the reader made of the object.

    .venv/bin/python benchmarks/stored.py          # about a minute
"""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

READ = """
import json, sys
from tfp_mlflow.cloud import Cloud
cloud = Cloud(sys.argv[1], cache_dir=sys.argv[2])
what = sys.argv[3]
if what.startswith("knowledge"):
    result = [len(k.rows) for k in cloud.knowledge(sys.argv[4])]
elif what == "spec":
    result = cloud.spec().id
else:
    result = [t.name for t in cloud.conforming(cloud.tasks())]
status = open("/proc/self/status").read().splitlines()
peak = int(next(l.split()[1] for l in status if l.startswith("VmHWM"))) // 1024
print(json.dumps({"peak_mb": peak, "result": str(result)[:80],
                  "quarantined": [q["reason"][:90] for q in cloud.quarantined()]}))
"""


def log_raw(client, experiment: str, tags: dict, artifact: str, data: bytes, start_time: int | None = None) -> str:
    from tfp_mlflow.cloud.schema import Tag, sha256_tag

    run = client.create_run(experiment, tags=tags, start_time=start_time)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / artifact.rsplit("/", 1)[1]
        local.write_bytes(data)
        client.log_artifact(run.info.run_id, str(local), artifact.rsplit("/", 1)[0])
    client.set_tag(run.info.run_id, sha256_tag(artifact), hashlib.sha256(data).hexdigest())
    if artifact.endswith("fingerprint.npz"):
        client.set_tag(run.info.run_id, Tag.FINGERPRINT_SHA256, hashlib.sha256(data).hexdigest())
    client.set_tag(run.info.run_id, Tag.COMPLETE, "1")
    return run.info.run_id


def main() -> None:
    from tfp_mlflow import Fingerprint
    from tfp_mlflow.cloud import Cloud, Knowledge, KnowledgeKind, KnowledgeRow
    from tfp_mlflow.cloud.schema import Kind, Tag
    from tfp_mlflow.spec import FingerprintSpec

    data = Path(__import__("tfp_mlflow").__file__).parent / "data"
    root = Path(tempfile.mkdtemp(prefix="tfp-stored-"))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cloud = Cloud(uri, cache_dir=root / "writer")
    spec = FingerprintSpec.load(data / "default-spec.npz")
    example = Fingerprint.load(data / "examples" / "radiograph_2.npz")
    rows = tuple(KnowledgeRow(architecture=f"model_{i % 50}", balanced_accuracy=0.5 + (i % 400) / 1000,
                              repetition=i % 3) for i in range(10_000))
    cloud.contribute(example, spec=spec, knowledge=[Knowledge(example.name, KnowledgeKind.ARCHITECTURE, rows)])
    experiment, client = cloud.experiment_id(), cloud.client
    # 1. a 16 MiB knowledge table on another task
    big = json.dumps({"task": "victim", "kind": "architecture", "rows": [
        {"architecture": "resnet18", "balanced_accuracy": 0.9, "repetition": 0}] * 300_000}).encode()
    cloud.contribute(None, name="victim", keywords=["x-ray"], num_images=10, num_classes=2)
    log_raw(client, experiment, {Tag.KIND: Kind.KNOWLEDGE, Tag.TASK: "victim", Tag.KNOWLEDGE: "architecture",
                                 Tag.CONTRIBUTOR: "mallory"}, "knowledge/architecture.json", big)
    # 2. a spec run declaring 1 GB, older than the real one
    buffer = io.BytesIO()
    np.savez_compressed(buffer, lo=np.zeros(64_000_000), hi=np.zeros(64_000_000), spec=np.array("{}"))
    log_raw(client, experiment, {Tag.KIND: Kind.SPEC, Tag.SPEC_ID: spec.id}, "spec/spec.npz", buffer.getvalue(),
            start_time=1)
    # 3. a 96 MiB fingerprint on a task run
    huge = np.random.default_rng(0).bytes(96 * 2**20)
    log_raw(client, experiment, {Tag.KIND: Kind.TASK, Tag.TASK: "bloated", Tag.CONTRIBUTOR: "mallory",
                                 Tag.KEYWORDS: "x-ray", Tag.SHAREABLE: "false"},
            "fingerprint/fingerprint.npz", huge)
    print(f"stored: knowledge {len(big) / 2**20:.0f} MiB, spec file {len(buffer.getvalue()) / 2**20:.1f} MiB "
          f"declaring 1.0 GB, fingerprint {len(huge) / 2**20:.0f} MiB")
    cases = [("knowledge, conforming (10,000 rows)", "knowledge", example.name),
             ("knowledge, hostile (21 MiB)", "knowledge-hostile", "victim"),
             ("spec (the hostile one met first)", "spec", ""),
             ("fingerprints (conforming and 96 MiB)", "fingerprints", "")]
    print(f"{'read':<40} {'peak RSS':>9}  what the reader did")
    for label, what, task in cases:
        out = subprocess.run([sys.executable, "-c", READ, uri, str(root / f"cache-{what}"), what, task],
                             capture_output=True, text=True)
        if out.returncode:
            print(f"{label:<40} failed: {out.stderr.strip().splitlines()[-1]}")
            continue
        answer = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{label:<40} {answer['peak_mb']:>6} MB  {answer['result']}; quarantined: {answer['quarantined']}")


if __name__ == "__main__":
    main()
