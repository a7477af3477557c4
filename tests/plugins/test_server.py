"""`mlflow server --app-name tfp`: the REST API, `tfp recommend --server`, the web page in a real headless Chromium,
and composition with MLflow's basic-auth app. Every server is a real subprocess on 127.0.0.1."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tfp_mlflow.cli import main
from tfp_mlflow.cloud import Cloud, Knowledge, KnowledgeKind, KnowledgeRow
from tfp_mlflow.errors import CloudError
from tfp_mlflow.recommend import recommend
from tfp_mlflow.testing.servers import LocalServer, basic_auth, http_call
from tfp_mlflow_plugins.service import MAX_UPLOAD_BYTES

pytestmark = [pytest.mark.slow, pytest.mark.server]

ROOT = Path(__file__).resolve().parents[2]
#: Screenshots of the page, kept as test artifacts.
SCREENSHOTS = Path(os.environ.get("TFP_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _call(url: str, data: bytes | None = None, auth: tuple[str, str] | None = None, method: str | None = None):
    """(status, parsed JSON or raw bytes) of a real HTTP request."""
    return http_call(url, auth=auth, data=data, method=method)


def _fill(cloud: Cloud, fingerprints: dict, spec) -> None:
    for name in ("a_1", "a_2", "b_1", "b_2"):
        knowledge = [Knowledge(name, KnowledgeKind.ARCHITECTURE,
                               (KnowledgeRow(architecture=f"arch_{name}", balanced_accuracy=0.8, auroc=0.9),))]
        cloud.contribute(fingerprints[name], domain=name[0], knowledge=knowledge, spec=spec, data_uri=f"/d/{name}",
                         shareable=True)


@pytest.fixture(scope="module")
def fingerprints(small_spec):
    from tests.conftest import draw_features
    from tfp_mlflow import FingerprintBuilder

    def make(name, seed, shape):
        builder = FingerprintBuilder(small_spec)
        builder.update(draw_features(seed, 3000, shape))
        return builder.build(name=name, keywords=("x-ray",), num_images=100 + seed, num_classes=2,
                             class_counts={"a": 50, "b": 50 + seed}, seed=seed)
    return {name: make(name, i, shape) for i, (name, shape) in enumerate(
        [("a_1", 1.5), ("a_2", 1.5), ("b_1", 4.0), ("b_2", 4.0), ("a_target", 1.5)])}


@pytest.fixture(scope="module")
def tfp_server(tmp_path_factory, fingerprints, small_spec):
    root = tmp_path_factory.mktemp("tfp-server")
    with LocalServer(root, app_name="tfp", env={"TFP_CACHE_DIR": str(root / "server-cache")}) as server:
        _fill(Cloud(server.url, cache_dir=root / "client-cache"), fingerprints, small_spec)
        yield server


def test_rest_api_lists_tasks_and_answers_like_the_cli(tfp_server, fingerprints, tmp_path):
    url = tfp_server.url
    status, body = _call(f"{url}/tfp/api/tasks")
    assert status == 200 and [t["name"] for t in body["tasks"]] == ["a_1", "a_2", "b_1", "b_2"]
    assert body["tasks"][0]["knowledge"] == ["architecture"] and body["tasks"][0]["has_fingerprint"]
    status, task = _call(f"{url}/tfp/api/tasks/a_1")
    assert status == 200 and task["nearest"][0]["source"] == "a_2"          # its own family first
    assert task["knowledge_runs"][0]["rows"][0]["architecture"] == "arch_a_1"
    status, png = _call(f"{url}/tfp/api/tasks/a_1/fingerprint.png")
    assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
    status, selectors = _call(f"{url}/tfp/api/selectors")
    assert status == 200 and "bkld-small-target" in [s["name"] for s in selectors["selectors"]]
    status, spec = _call(f"{url}/tfp/api/openapi.json")
    assert status == 200 and {"/tfp/api/recommend", "/tfp/api/tasks", "/tfp/api/tasks/{name}"} <= set(spec["paths"])
    status, world = _call(f"{url}/tfp/api/map")
    points = {p["name"]: (p["x"], p["y"]) for p in world["points"]}
    assert status == 200 and set(points) == {"a_1", "a_2", "b_1", "b_2"}

    def gap(a, b):
        return ((points[a][0] - points[b][0]) ** 2 + (points[a][1] - points[b][1]) ** 2) ** 0.5
    assert gap("a_1", "a_2") < min(gap("a_1", "b_1"), gap("a_1", "b_2"), gap("a_2", "b_1"), gap("a_2", "b_2"))

    body = fingerprints["a_target"].save(tmp_path / "target.npz").read_bytes()
    status, server_side = _call(f"{url}/tfp/api/recommend?top_k=2", body)
    assert status == 200, server_side
    local = recommend(Cloud(url, cache_dir=tmp_path / "cache"), fingerprints["a_target"], top_k=2, log=False)
    assert server_side["schema"] == "tfp.recommendation/1"
    assert [(r["source"], pytest.approx(r["distance"])) for r in server_side["ranking"]] == \
        [(r.source, r.distance) for r in local.ranking]
    assert server_side["scenarios"]["architecture"]["items"] == local.to_json()["scenarios"]["architecture"]["items"]
    assert _call(f"{url}/tfp/api/tasks/nope")[0] == 404


def test_bad_uploads_get_a_clear_4xx_and_the_server_keeps_running(tfp_server, make_fingerprint, tmp_path):
    import numpy as np

    from tfp_mlflow import FingerprintSpec

    url = f"{tfp_server.url}/tfp/api/recommend"
    status, body = _call(url, b"this is not a fingerprint")
    assert status == 400 and "not a readable .npz" in body["error"] and "\n" not in body["error"]
    other = FingerprintSpec.calibrate(np.random.default_rng(5).gamma(2.0, 1.0, (500, 12)), backbone="other",
                                      weights_sha256="1" * 64, variants={"small": 100, "large": 1000})
    wrong = make_fingerprint("wrong_spec", spec=other).save(tmp_path / "wrong.npz").read_bytes()
    status, body = _call(url, wrong)
    assert status == 400 and "spec" in body["error"]
    status, body = _call(url, b"\0" * (MAX_UPLOAD_BYTES + 1))
    assert status == 413 and "at most" in body["error"]
    status, body = _call(f"{url}?selector=nope", wrong)
    assert status == 400 and "unknown selector" in body["error"]
    status, body = _call(url, b"")
    assert status == 400 and "fingerprint" in body["error"]
    assert tfp_server.alive() and _call(f"{tfp_server.url}/health")[0] == 200
    assert _call(f"{tfp_server.url}/tfp/api/tasks")[0] == 200


def test_cli_recommend_uses_the_server_and_falls_back_on_a_plain_one(tfp_server, fingerprints, small_spec, tmp_path):
    target = fingerprints["a_target"].save(tmp_path / "target.npz")
    runner = CliRunner()
    env = {"TFP_CACHE_DIR": str(tmp_path / "cli-cache")}
    result = runner.invoke(main, ["recommend", str(target), "--server", tfp_server.url, "--json", "--top-k", "2"],
                           env=env)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert {r["source"] for r in payload["ranking"][:2]} == {"a_1", "a_2"} and payload["run_id"]
    assert not (tmp_path / "cli-cache").exists()        # ranked on the server: nothing downloaded here
    run = Cloud(tfp_server.url, cache_dir=tmp_path / "c").client.get_run(payload["run_id"])
    assert run.data.tags["tfp.kind"] == "recommendation" and run.data.tags["tfp.spec_id"]   # run-context plugin
    with LocalServer(tmp_path / "plain") as plain:           # no --app-name: MLflow alone
        _fill(Cloud(plain.url, cache_dir=tmp_path / "fill"), fingerprints, small_spec)
        result = runner.invoke(main, ["recommend", str(target), "--server", plain.url, "--json", "--no-log"],
                               env=env)
    assert result.exit_code == 0, result.output
    assert "has no tfp app" in result.stderr and json.loads(result.stdout)["ranking"][0]["source"] in {"a_1", "a_2"}


def test_one_sqlite_cloud_serves_the_command_line_and_the_server_in_any_order(fingerprints, small_spec, tmp_path):
    """Contribute locally, open the page and query through it, stop it, recommend locally again: the experiments the
    server created keep their artifacts where the command line reaches them too."""
    from tfp_mlflow.cloud.schema import RECOMMENDATION_EXPERIMENT
    from tfp_mlflow.testing.stores import sqlite_uri

    home = tmp_path / "tfp-cloud"                       # mlflow.db and artifacts/, as docs/server.md sets it up
    local_uri = sqlite_uri(home / "mlflow.db")
    _fill(Cloud(local_uri, cache_dir=tmp_path / "local"), fingerprints, small_spec)
    target = fingerprints["a_target"].save(tmp_path / "target.npz")
    runner = CliRunner()
    env = {"TFP_CACHE_DIR": str(tmp_path / "cli-cache")}
    with LocalServer(home, app_name="tfp", env={"TFP_CACHE_DIR": str(tmp_path / "server-cache")}) as server:
        assert _call(f"{server.url}/tfp/")[0] == 200
        remote = runner.invoke(main, ["recommend", str(target), "--server", server.url, "--json"], env=env)
        assert remote.exit_code == 0, remote.output
        assert json.loads(remote.stdout)["run_id"]         # logged by the server, into an experiment it created
        status, upload = _call(f"{server.url}/tfp/api/recommend?top_k=2", target.read_bytes())
        assert status == 200 and upload["ranking"]
    created = Cloud(local_uri, cache_dir=tmp_path / "check").client.get_experiment_by_name(RECOMMENDATION_EXPERIMENT)
    assert created.artifact_location == (home / "artifacts" / RECOMMENDATION_EXPERIMENT).as_uri()
    for _ in range(2):                                  # and a rerun, as the demo reruns
        local = runner.invoke(main, ["recommend", str(target), "--json", "--top-k", "2"],
                              env={**env, "MLFLOW_TRACKING_URI": local_uri})
        assert local.exit_code == 0, local.output
        payload = json.loads(local.stdout)
        assert payload["run_id"] and {r["source"] for r in payload["ranking"][:2]} == {"a_1", "a_2"}
        artifacts = {a.path for a in Cloud(local_uri, cache_dir=tmp_path / "check").client.list_artifacts(
            payload["run_id"])}
        assert "recommendation.json" in artifacts
    with LocalServer(home, app_name="tfp", env={"TFP_CACHE_DIR": str(tmp_path / "server-cache")}) as server:
        remote = runner.invoke(main, ["recommend", str(target), "--server", server.url, "--json"], env=env)
        assert remote.exit_code == 0, remote.output      # and the server goes on logging beside the local runs
        run = Cloud(server.url, cache_dir=tmp_path / "c").client.get_run(payload["run_id"])
        assert run.info.experiment_id == created.experiment_id


# -- the web page in a real browser ---------------------------------------------------------------------------------

def _browser(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"])


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_page_lists_tasks_draws_the_map_and_recommends_in_a_real_browser(tfp_server, fingerprints, tmp_path):
    from playwright.sync_api import sync_playwright

    target = fingerprints["a_target"].save(tmp_path / "a_target.npz")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = _browser(playwright)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{tfp_server.url}/tfp/")
        assert page.locator("#tasks tr.task").count() == 4
        page.wait_for_selector("circle.map-point", timeout=60_000)
        assert page.locator("circle.map-point").count() == 4
        page.locator("circle.map-point").first.hover()
        assert page.locator("#tooltip").is_visible()
        page.screenshot(path=str(SCREENSHOTS / "tfp-index.png"), full_page=True)
        page.set_input_files("#fingerprint-file", str(target))
        page.fill("#top-k", "2")
        page.click("#recommend-button")
        page.wait_for_selector("#recommendation table", timeout=60_000)
        text = page.locator("#recommendation").inner_text()
        assert "a_1" in text and "arch_a_" in text and "architecture" in text
        page.screenshot(path=str(SCREENSHOTS / "tfp-recommendation.png"), full_page=True)
        page.select_option("#scenario", "architecture")                        # every query option is on the form
        page.select_option("#order-by", "distance")
        page.click("#recommend-button")
        page.wait_for_function("document.querySelectorAll('#recommendation h3.scenario').length === 1 && "
                               "document.getElementById('recommendation').innerText.includes('ordered by distance')",
                               timeout=60_000)
        page.select_option("#scenario", "all")
        page.select_option("#order-by", "auto")
        page.set_input_files("#fingerprint-file", [])
        page.click("#recommend-button")
        page.wait_for_selector("#recommend-error", timeout=60_000)
        assert "fingerprint" in page.locator("#recommend-error").inner_text()
        page.set_input_files("#fingerprint-file", str(target))                  # trust nobody: nothing to rank
        page.fill("#trusted", "nobody")
        page.click("#recommend-button")
        page.wait_for_function("document.getElementById('recommend-error')?.innerText.includes('--trusted')",
                               timeout=60_000)
        page.click("#tasks a:text-is(\"a_1\")")                 # the list's link (the map names it too)
        page.wait_for_selector("#nearest")
        assert page.locator("#task-name").inner_text() == "a_1"
        page.wait_for_function("document.getElementById('fingerprint').naturalWidth > 100", timeout=60_000)
        page.screenshot(path=str(SCREENSHOTS / "tfp-task.png"), full_page=True)
        cloud = Cloud(tfp_server.url, cache_dir=tmp_path / "cache")             # tasks known without a fingerprint
        cloud.contribute(None, name="described", keywords=["x-ray", "chest"], num_images=500, num_classes=3)
        cloud.contribute(None, name="name_only")
        page.goto(f"{tfp_server.url}/tfp/")
        assert page.locator("#tasks tr.task").count() == 4                      # the fingerprinted ones, apart
        rows = page.locator("#keyword-tasks tr.task")
        assert rows.count() == 2 and rows.nth(0).inner_text().split()[:2] == ["described", "-"]
        assert "name only" in rows.nth(1).inner_text() and "?" in rows.nth(1).inner_text()
        assert "registered by name only" in page.locator("#name-only-note").inner_text()
        # The map and the form come first: a long list of tasks does not push them off the screen.
        assert page.locator("#map").bounding_box()["y"] < page.locator("#recommend").bounding_box()["y"] < \
            page.locator("#tasks").bounding_box()["y"]
        page.goto(f"{tfp_server.url}/tfp/tasks/name_only")
        assert "images ? classes ?" in " ".join(page.locator("table").first.inner_text().split())
        browser.close()
    assert errors == []


# -- with MLflow's basic-auth app --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def auth_server(tmp_path_factory, fingerprints, small_spec):
    root = tmp_path_factory.mktemp("auth-server")
    env, admin = basic_auth(root)
    with LocalServer(root, app_name="tfp-basic-auth", env=env) as server:
        os.environ.update(MLFLOW_TRACKING_USERNAME=admin[0], MLFLOW_TRACKING_PASSWORD=admin[1])
        try:
            _fill(Cloud(server.url, cache_dir=root / "client-cache"), fingerprints, small_spec)
        finally:
            del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
        yield server, admin


def test_basic_auth_guards_the_tfp_pages_and_api_with_mlflow_permissions(auth_server, fingerprints, small_spec,
                                                                          tmp_path, monkeypatch):
    from mlflow.server import get_app_client

    server, admin = auth_server
    url = server.url
    status, health = _call(f"{url}/tfp/api/health")                # anyone may ask, and learns nothing else
    assert status == 200 and set(health) <= {"ready", "state", "seconds", "reason"}, health
    assert _call(f"{url}/tfp/api/tasks")[0] == 401                  # anonymous
    assert _call(f"{url}/tfp/")[0] == 401
    assert _call(f"{url}/tfp/api/tasks", auth=("admin", "wrong-password"))[0] == 401
    status, body = _call(f"{url}/tfp/api/tasks", auth=admin)
    assert status == 200 and len(body["tasks"]) == 4
    reader = ("reader", secrets.token_urlsafe(16))
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin[1])
    users = get_app_client("basic-auth", tracking_uri=url)              # MLflow's own admin client
    users.create_user(*reader)
    status, body = _call(f"{url}/tfp/api/tasks", auth=reader)        # no permission on the cloud's experiment
    assert status == 403 and "READ" in body["error"]
    assert _call(f"{url}/tfp/", auth=reader)[0] == 403
    experiment_id = Cloud(url, cache_dir=tmp_path / "admin").experiment_id()
    users.grant_user_permission(reader[0], "experiment", experiment_id, "READ")
    status, body = _call(f"{url}/tfp/api/tasks", auth=reader)
    assert status == 200 and [t["name"] for t in body["tasks"]] == ["a_1", "a_2", "b_1", "b_2"]
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", reader[0])        # READ only: contributing is refused
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", reader[1])
    with pytest.raises(CloudError, match="may not write to experiment tfp-cloud"):
        Cloud(url, cache_dir=tmp_path / "reader").contribute(fingerprints["a_target"], spec=small_spec)
    assert "a_target" not in [t["name"] for t in _call(f"{url}/tfp/api/tasks", auth=admin)[1]["tasks"]]
    target = fingerprints["a_target"].save(tmp_path / "t.npz").read_bytes()
    status, body = _call(f"{url}/tfp/api/recommend", target, auth=reader)
    assert status == 200 and body["ranking"][0]["source"] in {"a_1", "a_2"}, body
    # A writer contributes as the account it logged in with, never as anybody else (what --trusted relies on).
    writer = ("writer", secrets.token_urlsafe(16))
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin[1])
    users.create_user(*writer)
    users.grant_user_permission(writer[0], "experiment", experiment_id, "EDIT")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", writer[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", writer[1])
    as_writer = Cloud(url, cache_dir=tmp_path / "writer")
    with pytest.raises(CloudError, match="user 'writer' may not contribute as 'admin'"):
        as_writer.contribute(fingerprints["a_target"], name="spoofed", spec=small_spec, contributor="admin")
    assert as_writer.contribute(fingerprints["a_target"], name="a_3", spec=small_spec).contributor == "writer"
    names = [t["name"] for t in _call(f"{url}/tfp/api/tasks", auth=admin)[1]["tasks"]]
    assert "a_3" in names and "spoofed" not in names
    status, body = _call(f"{url}/tfp/api/recommend?trusted=admin", target, auth=reader)
    assert status == 200 and "a_3" not in [r["source"] for r in body["ranking"]]
    assert body["trusted"] == ["admin"] and any("outside --trusted" in n for n in body["notes"]), body
    status, body = _call(f"{url}/tfp/api/recommend", target, auth=reader)
    assert "a_3" in [r["source"] for r in body["ranking"]]
    if CHROMIUM:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = _browser(playwright)
            anonymous = browser.new_page()
            with pytest.raises(PlaywrightError, match="AUTH"):       # the browser's login challenge, unanswered
                anonymous.goto(f"{url}/tfp/")
            assert anonymous.request.get(f"{url}/tfp/api/tasks").status == 401
            context = browser.new_context(http_credentials={"username": reader[0], "password": reader[1]})
            page = context.new_page()
            assert page.goto(f"{url}/tfp/").status == 200
            assert page.locator("#tasks tr.task").count() == 5
            page.wait_for_selector("circle.map-point", timeout=60_000)
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "tfp-index-basic-auth.png"), full_page=True)
            browser.close()


def _ready(url: str, limit: float = 120.0) -> dict:
    deadline = time.time() + limit
    while time.time() < deadline:
        status, health = _call(f"{url}/tfp/api/health")
        assert status == 200 and health["state"] in ("preparing", "ready"), health
        if health["ready"]:
            return health
        time.sleep(0.2)
    raise AssertionError(f"not ready in {limit:.0f} s")


def test_a_restarted_server_prepares_in_the_background_and_answers_as_before(fingerprints, small_spec, tmp_path):
    cache = tmp_path / "server-cache"
    target = fingerprints["a_target"].save(tmp_path / "t.npz").read_bytes()
    with LocalServer(tmp_path / "server", app_name="tfp", env={"TFP_CACHE_DIR": str(cache)}) as server:
        _fill(Cloud(server.url, cache_dir=tmp_path / "client-cache"), fingerprints, small_spec)
        before = _call(f"{server.url}/tfp/api/recommend", target)[1]
    shutil.rmtree(cache)
    with LocalServer(tmp_path / "server", app_name="tfp", env={"TFP_CACHE_DIR": str(cache)}) as server:
        # Nothing but probes reach it: MLflow's /health started the preparation, which fills the empty cache.
        health = _ready(server.url)
        assert health["state"] == "ready" and health["seconds"] >= 0
        assert list((cache / "cloud" / "prepared").iterdir()) and list((cache / "cloud").glob("parts-*"))
        after = _call(f"{server.url}/tfp/api/recommend", target)[1]
    assert [r["source"] for r in after["ranking"]] == [r["source"] for r in before["ranking"]]
    assert after["scenarios"] == before["scenarios"]


def test_recommend_on_a_server_of_keyword_tasks_draws_nothing(tmp_path):
    # Images that cannot be decoded: drawing any of them would fail, naming the file.
    for label in ("a", "b"):
        (tmp_path / "new_task" / label).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "new_task" / label / f"{i}.png").write_bytes(b"not a png")
    with LocalServer(tmp_path / "server", app_name="tfp", env={"TFP_CACHE_DIR": str(tmp_path / "sc")}) as server:
        Cloud(server.url, cache_dir=tmp_path / "fill").contribute(None, name="chest_a", keywords=["x-ray", "chest"],
                                                                  num_images=100, num_classes=2)
        runner = CliRunner()
        answered = runner.invoke(main, ["recommend", str(tmp_path / "new_task"), "--server", server.url,
                                        "--keywords", "x-ray,chest", "--json", "-", "--no-log"])
        assert answered.exit_code == 0, answered.output
        payload = json.loads(answered.stdout)
        assert payload["selector"] == "manual" and payload["ranking"][0]["source"] == "chest_a"
        assert any("no image was drawn" in n for n in payload["notes"])
        refused = runner.invoke(main, ["recommend", str(tmp_path / "new_task"), "--server", server.url])
        assert refused.exit_code == 2 and "--keywords" in refused.output and "png" not in refused.output
