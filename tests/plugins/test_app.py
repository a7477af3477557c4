"""The ``tfp-basic-auth`` app (``/tfp/`` routes, MLflow's own API behind tfp's checks) served in a thread of the test
process: the quick path's server. The same app as a real ``mlflow server`` subprocess is in test_server.py, and the
full catalogue of attacks in test_attacks.py."""
from __future__ import annotations

import json
import os
import secrets

import pytest

from tests.conftest import draw_features
from tfp_mlflow import FingerprintBuilder
from tfp_mlflow.cloud import Cloud, Knowledge, KnowledgeKind, KnowledgeRow
from tfp_mlflow.cloud.schema import Kind, Tag
from tfp_mlflow.errors import CloudError
from tfp_mlflow.testing.servers import ThreadServer, basic_auth, http_call

pytestmark = pytest.mark.server


def _fingerprint(spec, name: str, seed: int, shape: float):
    builder = FingerprintBuilder(spec)
    builder.update(draw_features(seed, 1500, shape))
    return builder.build(name=name, keywords=("x-ray",), num_images=100, num_classes=2, seed=seed)


@pytest.fixture(scope="module")
def site(tmp_path_factory, small_spec):
    """An initialised cloud: the admin's four tasks; ``writer`` may EDIT, ``reader`` READ, ``stranger`` nothing."""
    from mlflow.server import get_app_client

    root = tmp_path_factory.mktemp("thread-server")
    env, admin = basic_auth(root)
    accounts = {name: (name, secrets.token_urlsafe(12)) for name in ("writer", "reader", "stranger")}
    with ThreadServer(root, app_name="tfp-basic-auth", env=env) as server:
        with _as(admin):   # only while the admin prepares: the server's own client would read them too
            users = get_app_client("basic-auth", tracking_uri=server.url)
            for credentials in accounts.values():
                users.create_user(*credentials)
            cloud = Cloud(server.url, cache_dir=root / "admin-cache")
            cloud.initialise(small_spec, {"writer": "EDIT", "reader": "READ"})
            for i, (name, shape) in enumerate([("a_1", 1.5), ("a_2", 1.6), ("b_1", 4.0), ("b_2", 4.2)]):
                row = KnowledgeRow(architecture=f"arch_{name}", balanced_accuracy=0.8, auroc=0.9)
                cloud.contribute(_fingerprint(small_spec, name, i, shape), domain=name[0], spec=small_spec,
                                 knowledge=[Knowledge(name, KnowledgeKind.ARCHITECTURE, (row,))])
        yield {"url": server.url, "root": root, "admin": admin, **accounts}


class _as:
    """MLflow's client reads its credentials from the environment on every request."""

    def __init__(self, credentials: tuple[str, str]):
        self.credentials, self.saved = credentials, {}

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = self.credentials

    def __exit__(self, *exc):
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_a_reader_sees_the_api_the_page_and_its_description_and_nobody_else_does(site):
    url, reader = site["url"], site["reader"]
    status, health = http_call(f"{url}/tfp/api/health")
    assert status == 200 and set(health) <= {"ready", "state", "seconds", "reason"}
    for path in ("/tfp/api/tasks", "/tfp/", "/tfp/api/openapi.json", "/tfp/api/docs"):
        assert http_call(url + path)[0] == 401, path
        assert http_call(url + path, auth=site["stranger"])[0] == 403, path
    assert http_call(f"{url}/tfp/api/tasks", auth=(reader[0], "wrong"))[0] == 401
    status, listed = http_call(f"{url}/tfp/api/tasks", auth=reader)
    assert status == 200 and [t["name"] for t in listed["tasks"]] == ["a_1", "a_2", "b_1", "b_2"]
    status, detail = http_call(f"{url}/tfp/api/tasks/a_1", auth=reader)
    assert status == 200 and detail["nearest"][0]["source"] == "a_2"
    status, png = http_call(f"{url}/tfp/api/tasks/a_1/fingerprint.png", auth=reader)
    assert status == 200 and png.startswith(b"\x89PNG")
    status, body = http_call(f"{url}/tfp/api/tasks/nope", auth=reader)
    assert status == 404 and "nope" in body["error"] and str(site["root"]) not in body["error"]
    status, page = http_call(f"{url}/tfp/", auth=reader)
    assert status == 200 and all(name.encode() in page for name in ("a_1", "b_2"))
    assert http_call(f"{url}/tfp/tasks/b_1", auth=reader)[0] == 200
    status, described = http_call(f"{url}/tfp/api/openapi.json", auth=reader)
    parameters = {p["name"] for p in described["paths"]["/tfp/api/recommend"]["post"]["parameters"]}
    assert {"top_k", "scenario", "selector", "merge", "order_by", "metric", "trusted"} <= parameters


def test_an_upload_is_recommended_for_with_its_options_and_a_bad_one_is_one_line(site, small_spec, tmp_path):
    url, reader = site["url"], site["reader"]
    body = _fingerprint(small_spec, "new", 9, 1.55).save(tmp_path / "new.npz").read_bytes()
    status, answer = http_call(f"{url}/tfp/api/recommend", auth=reader, data=body)
    assert status == 200 and answer["ranking"][0]["source"] in {"a_1", "a_2"}, answer
    status, narrow = http_call(f"{url}/tfp/api/recommend?top_k=1&scenario=architecture&order_by=distance"
                               f"&merge=none&metric=auroc", auth=reader, data=body)
    assert status == 200 and set(narrow["scenarios"]) == {"architecture"} and narrow["metric"] == "auroc"
    architecture = narrow["scenarios"]["architecture"]
    assert len(architecture["items"]) == 1 and architecture["ordered_by"] == "distance"
    for query, data, expected in (("?top_k=abc", body, 422), ("", b"not an npz", 400),
                                  ("?merge=sideways", body, 400)):
        status, refused = http_call(f"{url}/tfp/api/recommend{query}", auth=reader, data=data)
        assert status == expected and "\n" not in refused["error"], (query, refused)
    assert http_call(f"{url}/tfp/api/recommend", auth=site["stranger"], data=body)[0] == 403


def test_a_writer_contributes_as_itself_and_changes_nobody_elses_run(site, small_spec, tmp_path):
    from mlflow import MlflowClient

    url = site["url"]
    with _as(site["writer"]):
        cloud = Cloud(url, cache_dir=tmp_path / "writer")
        with pytest.raises(CloudError, match="user 'writer' may not contribute as 'admin'"):
            cloud.contribute(_fingerprint(small_spec, "spoof", 7, 2.0), spec=small_spec, contributor="admin")
        assert cloud.contribute(_fingerprint(small_spec, "w_1", 8, 2.0), spec=small_spec).contributor == "writer"
        admins = next(r for r in cloud.find_runs(Kind.TASK, task="a_1") if r.tags[Tag.CONTRIBUTOR] == "admin")
        with pytest.raises(Exception, match="belongs to 'admin'"):
            MlflowClient(url).set_tag(admins.run_id, Tag.SHAREABLE, "true")
        own = MlflowClient(url).create_run(cloud.experiment_id()).info.run_id
    two = json.dumps({"run_id": own, "runUuid": admins.run_id, "key": Tag.SHAREABLE, "value": "true"}).encode()
    status, refused = http_call(f"{url}/api/2.0/mlflow/runs/set-tag", auth=site["writer"], data=two,
                                content_type="application/json")
    assert status == 400 and "more than one run" in refused["error"]
    with _as(site["admin"]):
        tags = MlflowClient(url).get_run(admins.run_id).data.tags
    assert Tag.SHAREABLE not in tags or tags[Tag.SHAREABLE] != "true"
    status, listed = http_call(f"{url}/tfp/api/tasks", auth=site["reader"])
    assert {t["name"]: t["contributor"] for t in listed["tasks"]}["w_1"] == "writer"
