"""Run by .ci/server-without-torch inside the torch-free venv: real `mlflow server` apps, real HTTP."""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path

from tfp_mlflow.testing.servers import LocalServer, basic_auth

examples = resources.files("tfp_mlflow") / "data" / "examples"
fingerprints = sorted(Path(str(p)) for p in examples.iterdir() if p.name.endswith(".npz"))
target, sources = fingerprints[0], fingerprints[1:]


def call(url: str, body: bytes | None = None, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def contribute(uri: str) -> None:
    tfp = str(Path(sys.executable).parent / "tfp")
    for path in sources:
        done = subprocess.run([tfp, "contribute", str(path), "--tracking-uri", uri], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]


home = Path(tempfile.mkdtemp())
with LocalServer(home / "plain", app_name="tfp", env={"TFP_CACHE_DIR": str(home / "cache")}) as server:
    contribute(server.url)
    status, page = call(f"{server.url}/tfp/")
    assert status == 200 and b"tfp" in page, (status, page[:300])
    status, body = call(f"{server.url}/tfp/api/recommend?top_k=2", target.read_bytes())
    answer = json.loads(body)
    assert status == 200 and len(answer["ranking"]) == len(sources), (status, body[:500])
    print(f"mlflow server --app-name tfp: /tfp/ 200; recommend on upload ranked {len(answer['ranking'])} tasks, "
          f"closest {answer['ranking'][0]['source']}")
env, admin = basic_auth(home / "auth")
with LocalServer(home / "auth", app_name="tfp-basic-auth", env=env) as server:
    status, _ = call(f"{server.url}/tfp/api/tasks")
    assert status == 401, status
    status, _ = call(f"{server.url}/tfp/api/tasks", auth=admin)
    assert status == 200, status
    print("mlflow server --app-name tfp-basic-auth: anonymous 401, admin 200")
