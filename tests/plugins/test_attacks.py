"""A hostile account against `mlflow server --app-name tfp-basic-auth`: every attack of the security issue, replayed.

Three accounts with permissions on the cloud's experiment: alice and mallory (EDIT), reader (READ). Alice
contributes honest tasks; mallory forges, overwrites and poisons through MLflow's own API, bypassing tfp. Readers
that trust alice must never receive mallory's data, and nothing mallory writes may break anybody's query.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import draw_features
from tfp_mlflow import FingerprintBuilder
from tfp_mlflow.cloud import Cloud, Knowledge, KnowledgeKind, KnowledgeRow
from tfp_mlflow.cloud.schema import Artifact, Kind, Param, Tag, sha256_tag
from tfp_mlflow.recommend import recommend
from tfp_mlflow.testing.servers import LocalServer, basic_auth, http_call

pytestmark = [pytest.mark.slow, pytest.mark.server]


@dataclass
class Site:
    url: str
    root: Path
    experiment_id: str
    admin: tuple[str, str]
    alice: tuple[str, str]
    mallory: tuple[str, str]
    reader: tuple[str, str]
    stranger: tuple[str, str]
    pid: int = 0


@contextlib.contextmanager
def as_user(credentials: tuple[str, str]):
    """MLflow's client reads the credentials from the environment on every request."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = credentials
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def call(url: str, auth: tuple[str, str] | None = None, data: bytes | None = None, method: str | None = None,
         content_type: str = "application/octet-stream"):
    return http_call(url, auth=auth, data=data, method=method, content_type=content_type)


def fingerprint(spec, name: str, seed: int, shape: float):
    builder = FingerprintBuilder(spec)
    builder.update(draw_features(seed, 2000, shape))
    return builder.build(name=name, keywords=("x-ray", "chest"), num_images=120, num_classes=2, seed=seed)


@pytest.fixture(scope="module")
def site(tmp_path_factory, small_spec):
    from mlflow.server import get_app_client

    root = tmp_path_factory.mktemp("attacked")
    env, admin = basic_auth(root)
    with LocalServer(root, app_name="tfp-basic-auth", env=env) as server:
        with as_user(admin):
            users = get_app_client("basic-auth", tracking_uri=server.url)
            accounts = {}
            for name in ("alice", "mallory", "reader", "stranger"):
                accounts[name] = (name, secrets.token_urlsafe(12))
                users.create_user(*accounts[name])
            # The cloud's owner prepares it (`tfp cloud init`): every tfp experiment, the spec, the owner, grants.
            experiment_id = Cloud(server.url, cache_dir=root / "admin-cache").initialise(
                small_spec, {"alice": "EDIT", "mallory": "EDIT", "reader": "READ"})["tfp-cloud"]
        with as_user(accounts["alice"]):
            cloud = Cloud(server.url, cache_dir=root / "alice-cache")
            for i, (name, shape) in enumerate([("a_1", 1.5), ("a_2", 1.6), ("b_1", 4.0), ("b_2", 4.2)]):
                knowledge = [Knowledge(name, KnowledgeKind.ARCHITECTURE,
                                       (KnowledgeRow(architecture=f"honest_{name}", balanced_accuracy=0.8),)),
                             Knowledge(name, KnowledgeKind.BASELINE, (KnowledgeRow(balanced_accuracy=0.7),))]
                cloud.contribute(fingerprint(small_spec, name, i, shape), domain=name[0], knowledge=knowledge,
                                 spec=small_spec)
        yield Site(server.url, root, experiment_id, admin, **accounts, pid=server.proc.pid)


def mallory_client(site: Site):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=site.url)


def raw_run(site: Site, tags: dict, params: dict = (), files: dict = (), start_time: int | None = None,
            extra_tags: dict = ()) -> str:
    """A complete tfp-looking run written with MLflow's API alone (no tfp check runs), as mallory."""
    with as_user(site.mallory):
        client = mallory_client(site)
        run = client.create_run(site.experiment_id, start_time=start_time,
                                tags={Tag.CONTRIBUTOR: "mallory", "mlflow.user": "mallory", **tags})
        run_id = run.info.run_id
        for key, value in dict(params).items():
            client.log_param(run_id, key, value)
        with tempfile.TemporaryDirectory() as tmp:
            for artifact_path, data in dict(files).items():
                local = Path(tmp) / Path(artifact_path).name
                local.write_bytes(data)
                client.log_artifact(run_id, str(local), str(Path(artifact_path).parent))
                import hashlib
                client.set_tag(run_id, sha256_tag(artifact_path), hashlib.sha256(data).hexdigest())
        for key, value in dict(extra_tags).items():
            client.set_tag(run_id, key, value)
        client.set_terminated(run_id, "FINISHED")
        client.set_tag(run_id, Tag.COMPLETE, "1")
    return run_id


def alice_runs(site: Site, kind: str, **tags) -> list:
    with as_user(site.admin):
        return Cloud(site.url, cache_dir=tempfile.mkdtemp()).find_runs(kind, **tags)


# -- --trusted cannot be bypassed ---------------------------------------------------------------------------------

def test_a_forged_knowledge_run_never_shadows_the_trusted_one(site, small_spec, tmp_path):
    honest = next(r for r in alice_runs(site, Kind.KNOWLEDGE, task="a_1", knowledge="architecture")
                  if r.tags[Tag.CONTRIBUTOR] == "alice")
    forged_table = {"task": "a_1", "kind": "architecture", "provenance": "",
                    "rows": [{"architecture": "forged_net", "balanced_accuracy": 0.99}]}
    # Alice's content key, an older start time, mallory's own file: what used to poison every cold cache.
    raw_run(site, {Tag.KIND: Kind.KNOWLEDGE, Tag.TASK: "a_1", Tag.KNOWLEDGE: "architecture",
                   Tag.KNOWLEDGE_KEY: honest.tags[Tag.KNOWLEDGE_KEY]},
            files={"knowledge/architecture.json": json.dumps(forged_table).encode()}, start_time=1)
    target = fingerprint(small_spec, "new_a", 11, 1.5)
    with as_user(site.reader):
        cache = tmp_path / "reader-cache"                                 # empty: the forged run is fetched first
        everyone = recommend(Cloud(site.url, cache_dir=cache), target, top_k=2, log=False, include_flagged=True)
        trusting = recommend(Cloud(site.url, cache_dir=cache), target, top_k=2, log=False, trusted="alice")
    untrusted_items = everyone.suggestions("architecture")
    assert "forged_net" in [i.architecture for i in untrusted_items]   # mallory's run is there, as hers
    items = trusting.suggestions("architecture")
    assert [i.architecture for i in items] == [f"honest_{i.source}" for i in items] and items
    a_1 = [i for i in items if i.source == "a_1"]
    assert not a_1 or a_1[0].evidence["knowledge_run"] == honest.run_id
    # Alice contributing the same content again is a no-op for her, not mallory's run returned as hers.
    with as_user(site.alice):
        again = Cloud(site.url, cache_dir=tmp_path / "alice").add_knowledge(
            Knowledge("a_1", KnowledgeKind.ARCHITECTURE, (KnowledgeRow(architecture="honest_a_1",
                                                                       balanced_accuracy=0.8),)))
    assert again == honest.run_id


def test_a_newer_task_version_by_another_account_does_not_shadow_the_trusted_one(site, small_spec, tmp_path):
    with as_user(site.mallory):
        Cloud(site.url, cache_dir=tmp_path / "m").contribute(
            fingerprint(small_spec, "b_2", 99, 1.5), domain="b", data_uri="https://mallory.example/b_2",
            shareable=True)
    with as_user(site.reader):
        cloud = Cloud(site.url, cache_dir=tmp_path / "r")
        by_name = {t.name: t for t in cloud.tasks(trusts=lambda who: who == "alice")}
        newest = {t.name: t for t in cloud.tasks()}
    assert by_name["b_2"].contributor == "alice" and by_name["b_2"].data_uri == ""
    assert newest["b_2"].contributor == "mallory"                        # untrusted view: the newest version
    with as_user(site.admin):                                            # alice's version is still there
        assert Cloud(site.url, cache_dir=tmp_path / "a").task("b_2") is not None


# -- owned, immutable runs -----------------------------------------------------------------------------------------

def _refused(action, name: str = "") -> str:
    """The refusal's message (MLflow's client raises MlflowException; its artifact client, requests' HTTPError)."""
    with pytest.raises(Exception) as info:
        action()
        pytest.fail(f"{name} was allowed")
    text = str(getattr(info.value, "message", "") or info.value)
    assert "PERMISSION_DENIED" in str(getattr(info.value, "error_code", "")) or "403" in str(info.value), text
    return text


def test_no_account_changes_another_accounts_run_and_nobody_but_an_admin_a_complete_one(site, tmp_path):
    from mlflow.entities import Metric, Param, RunTag

    task_run = next(r for r in alice_runs(site, Kind.TASK, task="a_2") if r.tags[Tag.CONTRIBUTOR] == "alice")
    knowledge_run = alice_runs(site, Kind.KNOWLEDGE, task="a_2", knowledge="architecture")[0]
    run_id = task_run.run_id
    forged = tmp_path / "architecture.json"
    forged.write_text(json.dumps({"task": "a_2", "kind": "architecture", "rows": [{"architecture": "x"}]}))
    with as_user(site.mallory):
        client = mallory_client(site)
        attempts = {
            "set shareable": lambda: client.set_tag(run_id, Tag.SHAREABLE, "true"),
            "set data URI": lambda: client.set_tag(run_id, Tag.DATA_URI, "https://mallory.example/a_2"),
            "delete a tag": lambda: client.delete_tag(run_id, Tag.KEYWORDS),
            "log a param": lambda: client.log_param(run_id, "num_images_2", "1"),
            "log a metric": lambda: client.log_metric(run_id, "balanced_accuracy", 0.1),
            "log a batch": lambda: client.log_batch(run_id, metrics=[Metric("m", 1.0, 0, 0)],
                                                    params=[Param("p", "1")], tags=[RunTag(Tag.SHAREABLE, "true")]),
            "overwrite the knowledge artifact": lambda: client.log_artifact(knowledge_run.run_id, str(forged),
                                                                            "knowledge"),
            "end it FAILED": lambda: client.set_terminated(run_id, "FAILED"),
            "delete it": lambda: client.delete_run(run_id),
            "change the cloud's spec": lambda: client.set_experiment_tag(site.experiment_id, Tag.SPEC_ID, "0" * 16),
        }
        messages = {name: _refused(action, name) for name, action in attempts.items()}
    assert "belongs to 'alice'" in messages["set shareable"], messages
    assert "only an admin" in messages["change the cloud's spec"]
    # The same writes over raw HTTP: the ajax API and the artifact proxy.
    ajax = call(f"{site.url}/ajax-api/2.0/mlflow/runs/set-tag", site.mallory, method="POST",
                data=json.dumps({"run_id": run_id, "key": Tag.SHAREABLE, "value": "true"}).encode(),
                content_type="application/json")
    proxy = call(f"{site.url}/api/2.0/mlflow-artifacts/artifacts/{site.experiment_id}/{knowledge_run.run_id}/"
                 f"artifacts/knowledge/architecture.json", site.mallory, data=forged.read_bytes(), method="PUT")
    assert ajax[0] == 403 and proxy[0] == 403, (ajax, proxy)
    # The artifact proxy's multipart upload routes (MLflow 3 serves them past Flask, as it does the proxy).
    target = f"{site.experiment_id}/{knowledge_run.run_id}/artifacts/knowledge/architecture.json"
    for route, body in (("mpu/create", {"path": "knowledge/architecture.json", "num_parts": 1}),
                        ("mpu/complete", {"path": "knowledge/architecture.json", "upload_id": "u", "parts": []}),
                        ("mpu/abort", {"path": "knowledge/architecture.json", "upload_id": "u"})):
        status, text = call(f"{site.url}/api/2.0/mlflow-artifacts/{route}/{target}", site.mallory, method="POST",
                            data=json.dumps(body).encode(), content_type="application/json")[:2]
        assert status == 403 and "alice" in str(text), (route, status, text)
    # Alice cannot change her own complete run either; an admin can.
    with as_user(site.alice):
        message = _refused(lambda: mallory_client(site).set_tag(run_id, Tag.SHAREABLE, "true"))
        assert "is complete" in message
    with as_user(site.admin):
        mallory_client(site).set_tag(run_id, "note", "checked by an admin")
        after = Cloud(site.url, cache_dir=tmp_path / "after")
        run = after.get_run(run_id)
        assert run.tags[Tag.SHAREABLE] == "false" and run.tags.get(Tag.DATA_URI, "") == ""
        assert [k.rows[0].architecture for k in after.knowledge("a_2", ["architecture"])] == ["honest_a_2"]


# -- one poisoned task breaks nobody's query ----------------------------------------------------------------------

def _npz(arrays: dict, compressed: bool = False) -> bytes:
    import io

    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def _poisons(spec) -> dict[str, tuple[dict, dict, dict]]:
    """name -> (tags, params, files) of task runs no tfp client would write."""
    import hashlib

    honest = fingerprint(spec, "p", 21, 2.0)
    arrays = {f"counts_{v}": np.asarray(honest.counts_of(v)) for v in honest.variants}
    arrays["feature_sum"] = np.asarray(honest.feature_sum)

    def files(name: str, **changes) -> dict:
        meta = {**honest.metadata(), "name": name}
        return {Artifact.FINGERPRINT: _npz({**arrays, **changes, "meta": np.array(json.dumps(meta))})}

    # One bin 2**64-1 and its former count plus one moved next door: the uint64 row sum wraps to num_draws.
    wrapped = arrays["counts_small"].astype(np.uint64)
    wrapped[0, 1] += wrapped[0, 0] + np.uint64(1)
    wrapped[0, 0] = np.uint64(2**64 - 1)
    huge = arrays["counts_small"].copy()
    huge[0, :4] += 2**62
    cases = {
        "poison_wrap": files("poison_wrap", counts_small=wrapped),
        "poison_huge": files("poison_huge", counts_small=huge),
        "poison_narrow": files("poison_narrow", **{k: v[:10] for k, v in arrays.items()}),
        "poison_bins": files("poison_bins", counts_small=arrays["counts_small"].reshape(-1, 50, 2).sum(axis=2)),
        "poison_nosmall": {Artifact.FINGERPRINT: _npz({k: v for k, v in arrays.items() if k != "counts_small"}
                                                      | {"meta": np.array(json.dumps(honest.metadata()))})},
        "poison_garbage": {Artifact.FINGERPRINT: b"PK not a zip at all"},
    }
    out = {}
    for name, artifact in cases.items():
        sha = hashlib.sha256(artifact[Artifact.FINGERPRINT]).hexdigest()
        out[name] = ({Tag.KIND: Kind.TASK, Tag.TASK: name, Tag.FINGERPRINT_SHA256: sha, Tag.SPEC_ID: spec.id,
                      Tag.KEYWORDS: "x-ray,chest"}, {"num_images": "50", "num_classes": "2"}, artifact)
    good = _npz({**arrays, "meta": np.array(json.dumps({**honest.metadata(), "name": "poison_tampered"}))})
    other = _npz({**arrays, "meta": np.array(json.dumps({**honest.metadata(), "name": "poison_other"}))})
    out["poison_tampered"] = ({Tag.KIND: Kind.TASK, Tag.TASK: "poison_tampered", Tag.SPEC_ID: spec.id,
                               Tag.FINGERPRINT_SHA256: hashlib.sha256(other).hexdigest(), Tag.KEYWORDS: "x-ray"},
                              {"num_images": "50", "num_classes": "2"}, {Artifact.FINGERPRINT: good})
    out["poison_params"] = ({Tag.KIND: Kind.TASK, Tag.TASK: "poison_params", Tag.KEYWORDS: "x-ray,chest"},
                            {"num_images": "abc", "num_classes": "2"}, {})
    return out


def test_poisoned_tasks_are_quarantined_and_every_query_still_answers(site, small_spec, tmp_path):
    poisons = _poisons(small_spec)
    for name, (tags, params, files) in poisons.items():
        extra = {}
        if name == "poison_tampered":   # the artifact's own tag says the truth; the task's checksum does not
            extra = {sha256_tag(Artifact.FINGERPRINT): tags[Tag.FINGERPRINT_SHA256]}
        raw_run(site, tags, params, files, extra_tags=extra)
    deep = b'{"task": "a_1", "kind": "baseline", "rows": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    raw_run(site, {Tag.KIND: Kind.KNOWLEDGE, Tag.TASK: "a_1", Tag.KNOWLEDGE: "baseline", Tag.KNOWLEDGE_KEY: "x"},
            files={"knowledge/baseline.json": deep})
    target = fingerprint(small_spec, "new_b", 12, 4.0)
    upload = target.save(tmp_path / "t.npz").read_bytes()
    with as_user(site.reader):
        # One cache for every query: a cache keyed by content can be shared by every reader of every cloud.
        reader = Cloud(site.url, cache_dir=tmp_path / "reader")
        for selector in ("bkld-small-target", "vdna"):
            result = recommend(reader, target, selector=selector, top_k=2, log=False)
            assert result.ranking and not any(r.source.startswith("poison") for r in result.ranking), selector
        manual = recommend(reader, None, keywords=("x-ray", "chest"), selector="manual", log=False)
        trusting = recommend(reader, target, trusted="alice", log=False)
    assert trusting.ranking[0].source in {"b_1", "b_2"}
    quarantined = {q["task"]: q for q in result.quarantined}
    assert set(poisons) - {"poison_params"} <= set(quarantined), sorted(quarantined)
    assert "more than num_draws" in quarantined["poison_wrap"]["reason"]
    assert "features" in quarantined["poison_narrow"]["reason"]
    assert "bins" in quarantined["poison_bins"]["reason"]
    assert "lacks variant small" in quarantined["poison_nosmall"]["reason"]
    assert "altered" in quarantined["poison_tampered"]["reason"]
    assert all(q["contributor"] == "mallory" for q in result.quarantined)
    manual_quarantined = {q["task"]: q["reason"] for q in manual.quarantined}
    assert "not a count" in manual_quarantined["poison_params"]
    assert "nests deeper" in " ".join(q["reason"] for q in manual.quarantined if q["what"] == "knowledge")
    # The server: every route answers, nothing non-finite, the quarantine listed with its reasons.
    status, body = call(f"{site.url}/tfp/api/tasks", site.reader)
    assert status == 200 and not any(t["name"].startswith("poison") for t in body["tasks"])
    assert {"poison_wrap", "poison_params"} <= {q["task"] for q in body["quarantined"]}
    for selector in ("bkld-small-target", "manual"):
        status, body = call(f"{site.url}/tfp/api/recommend?selector={selector}&keywords=x-ray", site.reader,
                            data=upload if selector != "manual" else b"")
        assert status == 200 and body["quarantined"], (selector, body)
    status, body = call(f"{site.url}/tfp/api/map", site.reader)
    assert status == 200 and not any(p["name"].startswith("poison") for p in body["points"]) and body["points"]
    status, page = call(f"{site.url}/tfp/", site.reader)
    assert status == 200 and b"poison_wrap" in page and b"Quarantined" in page


# -- the API itself ------------------------------------------------------------------------------------------------

def test_api_description_needs_credentials_and_errors_are_one_line_without_server_paths(site, small_spec, tmp_path):
    for path in ("/tfp/api/openapi.json", "/tfp/api/docs"):
        assert call(site.url + path)[0] == 401, path
        assert call(site.url + path, site.reader)[0] == 200, path
    status, body = call(f"{site.url}/tfp/api/recommend?top_k=abc", site.reader, data=b"")
    assert status == 422 and set(body) == {"error"} and "top_k" in body["error"] and "\n" not in body["error"]
    errors = [body["error"]]
    # A file declaring a billion-cell histogram (a few hundred kB) is refused from its header, before it costs
    # memory, for a reader; an account without permission is refused before the upload is even parsed.
    declared = _npz({"counts_small": np.zeros((small_spec.num_features, 2_000_000), dtype=np.int64),
                     "feature_sum": np.zeros(small_spec.num_features), "meta": np.array("{}")}, compressed=True)
    assert len(declared) < 1_000_000
    status, body = call(f"{site.url}/tfp/api/recommend", site.reader, data=declared)
    assert status == 400 and "declared" in body["error"], body
    errors.append(body["error"])
    status, body = call(f"{site.url}/tfp/api/recommend", site.stranger, data=declared)
    assert status == 403, body
    errors.append(body["error"])
    for bad in (b"not a zip", _npz({"x": np.zeros(3)})):
        status, body = call(f"{site.url}/tfp/api/recommend", site.reader, data=bad)
        assert status == 400, body
        errors.append(body["error"])
    status, body = call(f"{site.url}/tfp/api/tasks/no_such_task", site.reader)
    assert status == 404
    errors.append(body["error"])
    for message in errors:
        assert str(site.root) not in message and "/tmp/" not in message and "\n" not in message, message


# -- one identity per request ---------------------------------------------------------------------------------------

def _own_run(site: Site, who: tuple[str, str], experiment_id: str) -> str:
    with as_user(who):
        return mallory_client(site).create_run(experiment_id).info.run_id


def _snapshot(site: Site, run_id: str) -> tuple:
    with as_user(site.admin):
        run = mallory_client(site).get_run(run_id)
    return (dict(run.data.tags), dict(run.data.params), dict(run.data.metrics), run.info.status,
            run.info.lifecycle_stage)


#: Every run-write route with a body that writes into the run named by ``runId``.
_WRITES = {
    "runs/set-tag": {"key": Tag.SHAREABLE, "value": "true"},
    "runs/delete-tag": {"key": Tag.KEYWORDS},
    "runs/log-metric": {"key": "balanced_accuracy", "value": 0.1, "timestamp": 0, "step": 0},
    "runs/log-parameter": {"key": "forged", "value": "1"},
    "runs/log-batch": {"tags": [{"key": Tag.DATA_URI, "value": "https://mallory.example/"}]},
    "runs/update": {"status": "FAILED"},
    "runs/delete": {},
    "runs/log-inputs": {"datasets": []},
    "runs/log-model": {"model_json": "{}"},
}


def test_a_request_that_names_two_runs_is_refused_on_every_route_by_any_account(site):
    alice_run = next(r for r in alice_runs(site, Kind.TASK, task="b_1")
                     if r.tags[Tag.CONTRIBUTOR] == "alice").run_id
    before = _snapshot(site, alice_run)
    with as_user(site.stranger):        # no permission on the cloud: an experiment of its own is enough to try
        own_experiment = mallory_client(site).create_experiment("stranger-own")
    accounts = {"mallory": (site.mallory, _own_run(site, site.mallory, site.experiment_id)),
                "stranger": (site.stranger, _own_run(site, site.stranger, own_experiment))}
    answers = {}
    for who, (credentials, own) in accounts.items():
        for prefix in ("api", "ajax-api") if who == "mallory" else ("api",):
            for route, fields in _WRITES.items():
                spellings = ([{"run_uuid": own, "runId": alice_run}, {"run_id": own, "runUuid": alice_run}]
                             if (who, prefix) == ("mallory", "api") else [{"run_uuid": own, "runId": alice_run}])
                for spelling in spellings:
                    body = json.dumps({**spelling, **fields}).encode()
                    answers[(who, prefix, route, tuple(spelling))] = call(
                        f"{site.url}/{prefix}/2.0/mlflow/{route}", credentials, data=body, method="POST",
                        content_type="application/json")
                if (who, prefix) != ("mallory", "api"):
                    continue
                # Body and query disagree; a double-encoded body names alice's run alone.
                answers[(who, prefix, route, "query")] = call(
                    f"{site.url}/{prefix}/2.0/mlflow/{route}?run_id={alice_run}", credentials, method="POST",
                    data=json.dumps({"run_id": own, **fields}).encode(), content_type="application/json")
                answers[(who, prefix, route, "double-encoded")] = call(
                    f"{site.url}/{prefix}/2.0/mlflow/{route}", credentials, method="POST",
                    data=json.dumps(json.dumps({"run_id": alice_run, **fields})).encode(),
                    content_type="application/json")
            # upload-artifact reads its run from the query string only; a JSON body naming another is no cover.
            answers[(who, prefix, "upload-artifact", "query")] = call(
                f"{site.url}/{prefix}/2.0/mlflow/upload-artifact?run_uuid={alice_run}&path=knowledge/x.json",
                credentials, method="POST", data=json.dumps({"run_id": own}).encode(),
                content_type="application/json")
            answers[(who, prefix, "upload-artifact", "two")] = call(
                f"{site.url}/{prefix}/2.0/mlflow/upload-artifact?run_uuid={own}&run_id={alice_run}&path=x.json",
                credentials, method="POST", data=b"{}", content_type="application/json")
    allowed = {key: answer for key, answer in answers.items() if not 400 <= answer[0] < 500}
    assert allowed == {}
    for (who, _, route, how), (status, body) in answers.items():
        assert isinstance(body, dict) and "\n" not in body["error"], (who, route, how, body)   # one JSON line
        if how == "double-encoded" or (how == "query" and route == "upload-artifact"):
            # One run named, alice's: MLflow's own checks or tfp's ownership rule refuse it.
            assert status in (400, 403), (who, route, how, body)
        else:
            # Two runs named: refused as ambiguous before any permission check, in one JSON line.
            assert status == 400 and "more than one run" in body["error"] and "\n" not in body["error"], \
                (who, route, how, body)
    assert _snapshot(site, alice_run) == before


def test_a_run_is_created_by_its_caller_and_the_clouds_experiment_changes_only_by_an_admin(site):
    for field in ("user_id", "userId"):
        status, body = call(f"{site.url}/api/2.0/mlflow/runs/create", site.mallory, method="POST",
                            data=json.dumps({"experiment_id": site.experiment_id, field: "alice"}).encode(),
                            content_type="application/json")
        assert status == 403 and "may not contribute as 'alice'" in body["message"], body
    attempts = {
        "rename": ("experiments/update", {"experiment_id": site.experiment_id, "new_name": "tfp-cloud-moved"}),
        "rename, JSON name": ("experiments/update", {"experimentId": site.experiment_id, "newName": "x"}),
        "delete": ("experiments/delete", {"experiment_id": site.experiment_id}),
        "a tag": ("experiments/set-experiment-tag", {"experiment_id": site.experiment_id, "key": "tfp.anything",
                                                     "value": "1"}),
        "the spec": ("experiments/set-experiment-tag", {"experiment_id": site.experiment_id, "key": Tag.SPEC_ID,
                                                        "value": "0" * 16}),
    }
    for name, (route, body) in attempts.items():
        status, answer = call(f"{site.url}/api/2.0/mlflow/{route}", site.mallory, method="POST",
                              data=json.dumps(body).encode(), content_type="application/json")
        assert status in (400, 403) and "\n" not in answer["error"], (name, answer)   # tfp's refusal or MLflow's
    with as_user(site.admin):
        experiment = mallory_client(site).get_experiment(site.experiment_id)
    assert experiment.name == "tfp-cloud" and experiment.lifecycle_stage == "active"
    assert "tfp.anything" not in experiment.tags
    # What every contribution does to the experiment stays allowed: stamping the task list's version.
    status, _ = call(f"{site.url}/api/2.0/mlflow/experiments/set-experiment-tag", site.mallory, method="POST",
                     data=json.dumps({"experiment_id": site.experiment_id, "key": Tag.TASKS_VERSION,
                                      "value": "x"}).encode(), content_type="application/json")
    assert status == 200


def test_the_api_description_and_selectors_need_read(site):
    for path in ("/tfp/api/openapi.json", "/tfp/api/docs", "/tfp/api/selectors"):
        assert call(site.url + path, site.stranger)[0] == 403, path
        assert call(site.url + path, site.reader)[0] == 200, path


# -- a fuzzer driven by the served OpenAPI description -------------------------------------------------------------

def _strategy(schema: dict):
    """Values for one parameter: what its schema allows, and what it does not."""
    from hypothesis import strategies as st

    hostile = st.one_of(st.text(max_size=300), st.sampled_from(["", "-1", "1e400", "NaN", "../../etc/passwd",
                                                                 "%00", "a" * 5000, "true", "[]", "{}"]))
    kind = schema.get("type") or next((s.get("type") for s in schema.get("anyOf", []) if s.get("type")), "string")
    if kind == "integer":
        return st.one_of(st.integers(-2**40, 2**40).map(str), hostile)
    if kind == "boolean":
        return st.one_of(st.sampled_from(["true", "false", "1", "0"]), hostile)
    return hostile


def test_a_fuzzer_over_the_served_api_finds_no_500_no_non_finite_json_and_no_write(site, small_spec):
    import urllib.parse

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    status, description = call(f"{site.url}/tfp/api/openapi.json", site.reader)
    assert status == 200
    operations = [(path, method, op) for path, item in description["paths"].items()
                  for method, op in item.items() if method in ("get", "post")]
    assert len(operations) >= 5
    body = st.one_of(st.just(b""), st.binary(max_size=2000),
                     st.just(_npz({"counts_small": np.zeros((small_spec.num_features, 10**6), dtype=np.int64)},
                                  compressed=True)))

    def cloud_runs() -> int:
        with as_user(site.admin):
            return len(mallory_client(site).search_runs([site.experiment_id], max_results=5000))

    before = cloud_runs()
    seen = []

    @settings(max_examples=40, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(st.data())
    def probe(data):
        path, method, op = data.draw(st.sampled_from(operations))
        query, url_path = {}, path
        for parameter in op.get("parameters", []):
            value = data.draw(_strategy(parameter.get("schema", {})))
            if parameter["in"] == "path":
                url_path = url_path.replace("{" + parameter["name"] + "}", urllib.parse.quote(value or "x", safe=""))
            elif data.draw(st.booleans()):
                query[parameter["name"]] = value
        who = data.draw(st.sampled_from([site.reader, site.mallory, site.stranger]))
        url = f"{site.url}{url_path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        payload = data.draw(body) if method == "post" else None
        status, answer = call(url, who, data=payload, method=method.upper())   # strict JSON: no NaN, no Infinity
        seen.append((method, path, status))
        assert status < 500, (method, url[:200], status, answer if isinstance(answer, dict) else answer[:200])
        if 400 <= status < 500 and isinstance(answer, dict):
            assert set(answer) == {"error"} and "\n" not in answer["error"], answer

    probe()
    assert cloud_runs() == before                       # nothing written into the cloud by any of it
    assert len({path for _, path, _ in seen}) >= 4      # it reached most routes


# -- authenticate, then read ----------------------------------------------------------------------------------------

def _stream(url: str, path: str, size: int, headers: dict[str, str]) -> tuple[int | None, bytes]:
    """POST ``size`` bytes of JSON-looking filler to ``path``, a megabyte at a time, as a client that never stops
    sending would; the status and body of whatever the server answered (``None``: it answered nothing)."""
    import http.client
    import urllib.parse

    where = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(where.hostname, where.port, timeout=60)
    connection.putrequest("POST", path)
    for key, value in {"Content-Type": "application/json", "Content-Length": str(size), **headers}.items():
        connection.putheader(key, value)
    connection.endheaders()
    chunk = b'{"run_id": "' + b"a" * (1024 * 1024 - 12)
    try:
        for _ in range(size // len(chunk)):
            connection.send(chunk)
    except OSError:         # the server answered and closed: the rest is never read
        pass
    try:
        response = connection.getresponse()
        return response.status, response.read()
    except OSError:
        return None, b""
    finally:
        connection.close()


def test_a_huge_body_without_credentials_is_answered_unread_in_bounded_memory(site):
    import threading

    from tfp_mlflow.testing.servers import tree_memory_mb

    idle = tree_memory_mb(site.pid)
    peak, done = [idle], threading.Event()

    def watch():
        while not done.is_set():
            peak.append(tree_memory_mb(site.pid))
            done.wait(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        status, body = _stream(site.url, "/api/2.0/mlflow/runs/log-batch", 200 * 1024 * 1024,
                               {"X-Tfp-Verified-User": "admin"})   # a forged "verified" mark changes nothing
    finally:
        done.set()
        watcher.join()
    assert status in (401, None)
    if status is not None:
        assert json.loads(body)["error_code"] == "UNAUTHENTICATED"
    assert max(peak) - idle < 100, f"peak {max(peak)} MB against {idle} MB idle"
    # An authenticated caller's oversized body: one line, unread; the honest write beside it still works.
    import base64
    token = base64.b64encode(":".join(site.alice).encode()).decode()
    status, body = _stream(site.url, "/api/2.0/mlflow/runs/log-batch", 64 * 1024 * 1024,
                           {"Authorization": f"Basic {token}"})
    assert status in (413, None)
    if status is not None:
        assert "limit for JSON bodies" in json.loads(body)["error"]
    with as_user(site.alice):
        client = mallory_client(site)
        run = client.create_run(site.experiment_id)
        client.log_batch(run.info.run_id, params=[__import__("mlflow").entities.Param("honest", "yes")])
        assert client.get_run(run.info.run_id).data.params["honest"] == "yes"
    assert call(f"{site.url}/health")[0] == 200


# -- studies are owned tfp runs --------------------------------------------------------------------------------------

def _alices_study(site, name: str, space: dict, *, waiting: float):
    """Alice's study on the server: one finished trial, one running (returned) and one waiting with ``lr=waiting``."""
    import optuna

    from tfp_mlflow.cloud.studies import mlflow_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with as_user(site.alice):
        cloud = Cloud(site.url, cache_dir=tempfile.mkdtemp())
        study = optuna.create_study(study_name=name, storage=mlflow_storage(cloud), direction="maximize")
        study.tell(study.ask(space), 0.6)
        running = study.ask(space)
        study.enqueue_trial({"lr": waiting})
        study._storage.flush_all_batches()
    return cloud, study, running


def test_another_account_cannot_take_beat_finish_add_to_or_shadow_a_study(site):
    import optuna
    from mlflow.exceptions import MlflowException
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState

    from tfp_mlflow.cloud.schema import STUDIES_EXPERIMENT
    from tfp_mlflow.cloud.studies import mlflow_storage

    space = {"lr": FloatDistribution(1e-4, 1e-2, log=True)}
    cloud, study, _ = _alices_study(site, "tune-owned", space, waiting=1e-3)
    with as_user(site.alice):
        waiting = next(t._trial_id for t in study.get_trials() if t.state == TrialState.WAITING)
    with as_user(site.admin):   # mallory may write tfp-studies (`tfp cloud init --grant mallory=EDIT`)
        studies = cloud.client.get_experiment_by_name(STUDIES_EXPERIMENT).experiment_id
    with as_user(site.mallory):
        client = mallory_client(site)
        for attempt in (lambda: client.log_param(waiting, Param.CLAIMED_BY, "mallory-worker"),   # take it
                        lambda: client.set_tag(waiting, Tag.HEARTBEAT, "not a number"),         # beat for it
                        lambda: client.set_terminated(waiting, "FAILED")):                      # finish it
            with pytest.raises(MlflowException, match="belongs to 'alice'"):
                attempt()
        # A fake finished trial added under alice's study, with MLflow's own API: mallory's run, not the study's.
        fake = client.create_run(studies, tags={"mlflow.parentRunId": study._study_id, "param_directions": "{}",
                                                "numbers": "9"})
        client.log_metric(fake.info.run_id, "value", 0.99)
        client.set_terminated(fake.info.run_id, "FINISHED")
        # The same name opened by mallory is mallory's own study; alice's is never hers to resume.
        hers = optuna.create_study(study_name="tune-owned", storage=mlflow_storage(Cloud(site.url,
                                   cache_dir=tempfile.mkdtemp())), direction="maximize", load_if_exists=True)
        assert hers._study_id != study._study_id and hers.trials == []
    with as_user(site.alice):
        again = optuna.load_study(study_name="tune-owned", storage=mlflow_storage(cloud))
        assert again._study_id == study._study_id
        assert sorted(t.value for t in again.trials if t.value is not None) == [0.6]     # the fake is not in it
        taken = again.ask(space)                             # the honest path: alice's worker takes her trial
        assert taken.params == {"lr": 1e-3}


def test_a_fresh_clouds_experiments_and_owner_cannot_be_squatted(tmp_path, small_spec):
    """Before the owner prepared the cloud, nobody without admin creates tfp's experiments or names an owner; then
    `tfp cloud init` (an admin) prepares it and a contributor's first contribution works."""
    from mlflow.server import get_app_client

    env, admin = basic_auth(tmp_path)
    with LocalServer(tmp_path / "fresh", app_name="tfp-basic-auth", env=env) as server:
        url = server.url
        with as_user(admin):
            users = get_app_client("basic-auth", tracking_uri=url)
            stranger, contributor = ("stranger", secrets.token_urlsafe(12)), ("lab", secrets.token_urlsafe(12))
            users.create_user(*stranger)
            users.create_user(*contributor)
        for name in ("tfp-studies", "tfp-tuning", "tfp-recommendations", "tfp-cloud"):
            status, body = call(f"{url}/api/2.0/mlflow/experiments/create", stranger, method="POST",
                                data=json.dumps({"name": name}).encode(), content_type="application/json")
            assert status == 403 and "tfp cloud init" in body["error"] and "\n" not in body["error"], body
        with as_user(contributor), pytest.raises(Exception, match="ask an admin to run `tfp cloud init`"):
            Cloud(url, cache_dir=tmp_path / "early").contribute(fingerprint(small_spec, "early", 9, 2.0),
                                                                spec=small_spec)
        from click.testing import CliRunner

        from tfp_mlflow.cli import main

        spec_path = small_spec.save(tmp_path / "spec.npz")
        with as_user(admin):
            for _ in range(2):   # a rerun changes nothing
                done = CliRunner().invoke(main, ["cloud", "init", "--spec", str(spec_path), "--grant", "lab=EDIT",
                                                 "--tracking-uri", url])
                assert done.exit_code == 0 and "tfp-studies" in done.output, done.output
            cloud_id = Cloud(url, cache_dir=tmp_path / "admin").experiment_id()
        status, body = call(f"{url}/api/2.0/mlflow/experiments/set-experiment-tag", contributor, method="POST",
                            data=json.dumps({"experiment_id": cloud_id, "key": Tag.OWNER, "value": "lab"}).encode(),
                            content_type="application/json")
        assert status == 403 and "only an admin" in body["error"], body
        with as_user(contributor):
            task = Cloud(url, cache_dir=tmp_path / "lab").contribute(fingerprint(small_spec, "first", 1, 2.0),
                                                                     spec=small_spec)
        assert task.contributor == "lab"
        with as_user(admin):
            tags = Cloud(url, cache_dir=tmp_path / "check").runs.experiment_tags()
        assert tags[Tag.OWNER] == admin[0] and tags[Tag.SPEC_ID] == small_spec.id


def _run_write_routes() -> list[tuple[str, object]]:
    """Every route of MLflow's REST API that writes into an existing run, with its request message (from MLflow's
    own endpoint table: a route MLflow adds is fuzzed without a change here)."""
    from mlflow.server import handlers

    message = {}
    for request, handler in handlers.HANDLERS.items():
        message.setdefault(handler, request)
    return [(path, message[handler]) for path, handler, methods in handlers.get_endpoints()
            if "POST" in methods and "/mlflow/runs/" in path and handler in message
            and "run_id" in message[handler].DESCRIPTOR.fields_by_name]


def _body(data, request, run_ids: list[str]) -> dict:
    """A request body drawn from the message's fields: the targeted run under each of its names (``run_id``,
    ``run_uuid``, both, or disagreeing), the study's own keys and hostile values."""
    from hypothesis import strategies as st

    keys = st.sampled_from([Tag.HEARTBEAT, Param.CLAIMED_BY, Tag.OWNER, Tag.CONTRIBUTOR, Tag.KIND,
                            "mlflow.parentRunId", "value", "numbers", "param_directions", "user_attrs_rank"])
    text = st.one_of(st.text(max_size=40), st.sampled_from(["9e99", "NaN", "-1", "FINISHED", "mallory"]))
    pair = st.fixed_dictionaries({"key": keys, "value": text})
    body = {}
    for field in request.DESCRIPTOR.fields:
        if field.name in ("run_id", "run_uuid"):
            if data.draw(st.booleans()):
                body[field.name] = data.draw(st.sampled_from(run_ids))
        elif field.name == "status":
            body[field.name] = data.draw(st.sampled_from(["FINISHED", "FAILED", "KILLED", "RUNNING", "SCHEDULED"]))
        elif field.name in ("key",):
            body[field.name] = data.draw(keys)
        elif field.name in ("params", "tags", "metrics"):
            body[field.name] = data.draw(st.lists(pair, max_size=3))
            if field.name == "metrics":
                body[field.name] = [{**m, "value": 0.99, "timestamp": 1, "step": 0} for m in body[field.name]]
        elif field.type in (field.TYPE_DOUBLE, field.TYPE_FLOAT):
            body[field.name] = data.draw(st.floats(allow_nan=False, allow_infinity=False))
        elif field.type in (field.TYPE_INT64, field.TYPE_INT32):
            body[field.name] = data.draw(st.integers(0, 2**40))
        elif field.type == field.TYPE_STRING:
            body[field.name] = data.draw(text)
    if not ({"run_id", "run_uuid"} & set(body)):
        body["run_id"] = data.draw(st.sampled_from(run_ids))
    return body


def test_a_fuzzer_over_every_run_write_route_leaves_another_accounts_study_untouched(site):
    """Schema-driven: each run-write route of MLflow's endpoint table, bodies drawn from its request message, aimed
    by mallory at alice's study run and trial runs. Whatever is refused or answered, alice's study reads the same
    afterwards, nothing answers 500, and alice's own worker still finishes her trial."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from optuna.distributions import FloatDistribution


    space = {"lr": FloatDistribution(1e-4, 1e-2, log=True)}
    _, study, running = _alices_study(site, "tune-fuzzed", space, waiting=2e-3)
    with as_user(site.alice):
        run_ids = [study._study_id, *(t._trial_id for t in study.get_trials())]

    def state() -> list:
        with as_user(site.alice):
            runs = [mallory_client(site).get_run(run_id) for run_id in run_ids]
        return [(r.info.status, r.info.lifecycle_stage, r.info.end_time, dict(r.data.params), dict(r.data.metrics),
                 {k: v for k, v in r.data.tags.items() if k != Tag.HEARTBEAT}) for r in runs]

    before, routes, seen = state(), _run_write_routes(), set()
    assert {"/api/2.0/mlflow/runs/set-tag", "/api/2.0/mlflow/runs/log-batch", "/api/2.0/mlflow/runs/update",
            "/api/2.0/mlflow/runs/delete"} <= {path for path, _ in routes}

    def probe_route(path, request):
        @settings(max_examples=3, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
        @given(st.data())
        def probe(data):
            body = _body(data, request, run_ids)
            status, answer = call(site.url + path, site.mallory, data=json.dumps(body).encode(), method="POST",
                                  content_type="application/json")
            seen.add(path)
            assert status < 500, (path, body, answer)
            assert status != 200, (path, body, answer)        # every write into alice's runs is refused

        probe()

    for path, request in routes:                           # every route (both prefixes), a few bodies each
        probe_route(path, request)
    assert state() == before                               # and none of it left a mark
    assert seen == {path for path, _ in routes}
    with as_user(site.alice):                              # the honest path: alice's worker finishes her trial
        study.tell(running, 0.7)
        assert study.ask(space).params == {"lr": 2e-3}


def test_a_worker_account_the_owner_names_runs_its_trials_and_cannot_change_the_study(site):
    """The honest path the study attacks resemble: alice names mallory's account as a worker of one study; mallory's
    worker joins it by alice's name, takes and finishes a waiting trial, which alice's study then holds; alice's own
    worker may end a trial mallory's left; mallory still cannot name workers or write the study's own run."""
    import optuna
    from mlflow.exceptions import MlflowException
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState

    from tfp_mlflow.cloud.studies import mlflow_storage
    from tfp_mlflow.errors import BadInputError

    space = {"lr": FloatDistribution(1e-4, 1e-2, log=True)}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with as_user(site.alice):
        cloud = Cloud(site.url, cache_dir=tempfile.mkdtemp())
        study = optuna.create_study(study_name="tune-team", direction="maximize",
                                    storage=mlflow_storage(cloud, workers=[site.mallory[0]]))
        study.tell(study.ask(space), 0.6)
        study.enqueue_trial({"lr": 3e-3})
        study._storage.flush_all_batches()
    with as_user(site.mallory):
        theirs = Cloud(site.url, cache_dir=tempfile.mkdtemp())
        with pytest.raises(BadInputError, match="alice has no study named 'tune-solo'"):
            optuna.create_study(study_name="tune-solo", direction="maximize", load_if_exists=True,
                                storage=mlflow_storage(theirs, owner="alice"))
        joined = optuna.create_study(study_name="tune-team", direction="maximize", load_if_exists=True,
                                     storage=mlflow_storage(theirs, owner="alice"))
        assert joined._study_id == study._study_id
        taken = joined.ask(space)                                 # alice's waiting trial, taken by her worker
        assert taken.params == {"lr": 3e-3}
        joined.tell(taken, 0.8)
        left = joined.ask(space)                                  # a trial of mallory's own, then gone
        joined._storage.flush_all_batches()
        with pytest.raises(MlflowException, match="belongs to 'alice'"):
            mallory_client(site).set_tag(study._study_id, Tag.WORKERS, "mallory,stranger")
    with as_user(site.alice):
        again = optuna.load_study(study_name="tune-team", storage=mlflow_storage(cloud))
        assert sorted(t.value for t in again.trials if t.value is not None) == [0.6, 0.8]
        again._storage.set_trial_state_values(left._trial_id, TrialState.FAIL)   # her worker ends mallory's trial
        assert {t.number: t.state for t in again.get_trials()}[left.number] == TrialState.FAIL
