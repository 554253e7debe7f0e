"""Calling marketplace apps end to end: a publisher's real service, a subscriber's own keys,
several gateway processes sharing the meter, each storing the calls it billed."""

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.db.models import Sum

from conftest import REPO, _worker_env, python_package, wait_for
from marketplace.models import DailyUsage
from tests.support import deploy, upload, wait_status

pytestmark = pytest.mark.integration

APP_MODEL = """
import time
import traceback

from runtime.errors import InvalidInput

class Model:
    def load(self, model_dir):
        pass

    def predict(self, inputs):
        out = []
        for item in inputs:
            if item == "bad":
                raise InvalidInput("'bad' is not a good input")
            if item == "crash":
                raise RuntimeError("the model fell over")
            if item == "bad-with-trace":
                try:
                    {}["secret-of-the-publisher"]
                except KeyError:
                    raise InvalidInput("no such key\\n" + traceback.format_exc())
            if item == "slow":
                time.sleep(0.2)
            out.append(len(item) if isinstance(item, bytes) else f"ok:{item}")
        return out
"""

PLANS = [
    {"name": "free", "monthly_quota": 50, "rate_limit_per_s": 1000, "price_per_1k": "0.00"},
    {"name": "pro", "monthly_quota": 100000, "rate_limit_per_s": 1000, "price_per_1k": "1.50"},
    {"name": "slow-lane", "monthly_quota": 100000, "rate_limit_per_s": 5, "price_per_1k": "0.00"},
]


@pytest.fixture
def app(worker, api):
    """The publisher (``api``'s organization) lists its service ``echo`` as the app ``echo-app``."""
    upload(api, "echo", "echo.zip", python_package(APP_MODEL))
    deploy(api, "echo", "echo")
    wait_status(api, "echo")
    body = {"service": "echo", "slug": "echo-app", "title": "Echo", "plans": PLANS}
    assert api.post("/api/v1/listings", body, format="json").status_code == 201
    assert api.post("/api/v1/listings/echo-app/publish").status_code == 200
    return "echo-app"


def _subscribe(client, plan: str) -> dict:
    response = client.post("/api/v1/marketplace/echo-app/subscribe", {"plan": plan}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _call(client, inputs):
    return client.post("/api/v1/apps/echo-app/predict", {"inputs": inputs}, format="json")


def test_an_app_answers_only_its_subscribers(app, api, outsider_api):
    response = _call(outsider_api, ["a"])
    assert (response.status_code, response.json()["code"]) == (403, "forbidden")
    subscription = _subscribe(outsider_api, "pro")
    response = _call(outsider_api, ["a", "b"])
    assert response.status_code == 200, response.content
    assert response.json()["outputs"] == ["ok:a", "ok:b"]
    raw = outsider_api.generic("POST", "/api/v1/apps/echo-app/predict", b"\x89PNG12345", content_type="image/png")
    assert (raw.status_code, raw.json()["outputs"]) == (200, [9])
    assert outsider_api.delete(f"/api/v1/subscriptions/{subscription['id']}").status_code == 204
    response = _call(outsider_api, ["a"])
    assert (response.status_code, response.json()["code"]) == (403, "forbidden")
    assert _call(outsider_api, ["a"]).status_code == 403
    unknown = outsider_api.post("/api/v1/apps/no-such-app/predict", {"inputs": ["a"]}, format="json")
    assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")


def test_a_subscriber_never_reaches_the_publishers_service_nor_the_publisher_its_keys(app, api, outsider_api):
    _subscribe(outsider_api, "pro")
    for path in ("/api/v1/services/echo", "/api/v1/services/echo/metrics", "/api/v1/models/echo"):
        assert outsider_api.get(path).status_code == 404, path
    assert outsider_api.post("/api/v1/services/echo/predict", {"inputs": ["a"]}, format="json").status_code == 404
    assert outsider_api.get("/api/v1/listings/echo-app/usage").status_code == 404
    subscriber_keys = {key["prefix"] for key in outsider_api.get("/api/v1/keys").json()}
    publisher_view = api.get("/api/v1/keys").json() + [api.get("/api/v1/listings/echo-app/usage").json()]
    assert subscriber_keys and not any(prefix in str(publisher_view) for prefix in subscriber_keys)
    detail = outsider_api.get("/api/v1/marketplace/echo-app").json()
    assert not {"service", "instances", "traffic", "status"} & set(detail)


def test_only_successful_calls_count(app, outsider_api, settings):
    subscription = _subscribe(outsider_api, "free")
    assert _call(outsider_api, ["a"]).status_code == 200
    assert _call(outsider_api, ["bad"]).json()["code"] == "invalid_input"
    assert _call(outsider_api, ["crash"]).status_code == 502
    too_big = outsider_api.generic(
        "POST",
        "/api/v1/apps/echo-app/predict",
        b"x" * (settings.MODELBAY_MAX_PREDICT_BYTES + 1),
        content_type="image/png",
    )
    assert (too_big.status_code, too_big.json()["code"]) == (413, "payload_too_large")
    usage = outsider_api.get(f"/api/v1/subscriptions/{subscription['id']}/usage").json()
    assert (usage["used"], usage["quota"]) == (1, 50)
    assert [day["calls"] for day in usage["daily"]] == [1]
    assert outsider_api.get("/api/v1/subscriptions").json()[0]["used"] == 1


def test_a_models_error_stays_with_its_publisher(app, api, outsider_api):
    """A subscriber gets a generic model_error for the model's failure; the publisher's own
    service logs keep the model's error and traceback."""
    _subscribe(outsider_api, "pro")
    crash = _call(outsider_api, ["crash"])
    assert crash.status_code == 502
    assert crash.json() == {"code": "model_error", "detail": "The app failed on this input."}
    assert "fell over" not in crash.content.decode()
    bad = _call(outsider_api, ["bad"])
    assert bad.status_code == 422
    assert bad.json() == {"code": "invalid_input", "detail": "'bad' is not a good input"}
    traced = _call(outsider_api, ["bad-with-trace"])
    assert (traced.status_code, traced.json()) == (422, {"code": "invalid_input", "detail": "no such key"})
    assert "Traceback" not in traced.content.decode() and "secret-of-the-publisher" not in traced.content.decode()
    # The publisher calling its own service sees the model's error, and its logs the traceback.
    own = api.post("/api/v1/services/echo/predict", {"inputs": ["crash"]}, format="json")
    assert own.status_code == 500 and "the model fell over" in own.json()["detail"]

    def logged():
        logs = api.get("/api/v1/services/echo/logs", {"tail": 500}).json()["logs"]
        return "Traceback" in logs and "RuntimeError: the model fell over" in logs

    wait_for(logged, timeout_s=10, what="the model's traceback in the service's logs")


def test_subscribing_again_after_a_cancel_keeps_the_used_quota(app, outsider_api):
    subscription = _subscribe(outsider_api, "free")
    with ThreadPoolExecutor(8) as pool:
        assert {r.status_code for r in pool.map(lambda i: _call(outsider_api, [str(i)]), range(50))} == {200}
    spent = _call(outsider_api, ["one more"])
    assert (spent.status_code, spent.json()["code"]) == (429, "quota_exceeded")
    assert outsider_api.delete(f"/api/v1/subscriptions/{subscription['id']}").status_code == 204
    again = _subscribe(outsider_api, "free")
    assert again["id"] != subscription["id"]
    still = _call(outsider_api, ["one more"])
    assert (still.status_code, still.json()["code"]) == (429, "quota_exceeded")
    usage = outsider_api.get(f"/api/v1/subscriptions/{again['id']}/usage").json()
    assert (usage["used"], usage["quota"]) == (50, 50)


def test_a_change_of_plan_takes_effect_at_once(app, outsider_api):
    _subscribe(outsider_api, "free")
    with ThreadPoolExecutor(8) as pool:
        assert {r.status_code for r in pool.map(lambda i: _call(outsider_api, [str(i)]), range(50))} == {200}
    spent = _call(outsider_api, ["one more"])
    assert (spent.status_code, spent.json()["code"]) == (429, "quota_exceeded")
    assert int(spent["Retry-After"]) > 29 * 86400
    _subscribe(outsider_api, "pro")
    assert _call(outsider_api, ["one more"]).status_code == 200


def test_an_app_follows_its_services_versions(app, api, outsider_api):
    """What the publisher's traffic split routes to is what subscribers get, with no change on their side."""
    _subscribe(outsider_api, "pro")
    response = api.post("/api/v1/models/echo/versions", {"file": _package_file()}, format="multipart")
    assert response.status_code == 201
    assert api.post("/api/v1/services/echo/versions", {"version": 2}, format="json").status_code == 202

    def v2_ready():
        instances = api.get("/api/v1/services/echo").json()["instances"]
        return any(i["version"] == 2 and i["status"] == "ready" for i in instances)

    wait_for(v2_ready, timeout_s=60, what="version 2 ready")
    assert _call(outsider_api, ["a"])["X-Model-Version"] == "1"
    assert api.put("/api/v1/services/echo/traffic", {"weights": {"2": 100}}, format="json").status_code == 200
    assert {_call(outsider_api, ["a"])["X-Model-Version"] for _ in range(5)} == {"2"}


def _package_file():
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("echo.zip", python_package(APP_MODEL))


# --- several gateway processes ------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gateways(app, tmp_path):
    """Two gunicorn processes (two workers each) on the test database and Redis."""
    processes, urls = [], []
    for n in range(2):
        port = _free_port()
        log = open(tmp_path / f"gateway-{n}.log", "wb")
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
                 "--no-control-socket"],
                cwd=REPO, env=_worker_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        )  # fmt: skip
        urls.append(f"http://127.0.0.1:{port}")

    def all_up():
        for url in urls:
            try:
                httpx.get(url + "/api/v1/marketplace", timeout=2)
            except httpx.TransportError:
                return False
        return True

    wait_for(all_up, timeout_s=60, what="the gateway processes")
    yield urls
    for process in processes:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


def _burst(urls: list[str], key: str, calls: int, body: dict) -> list[httpx.Response]:
    """``calls`` calls at once, spread over the gateways."""
    clients = [httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) for url in urls]

    def one(i):
        return clients[i % len(clients)].post("/api/v1/apps/echo-app/predict", json=body)

    with ThreadPoolExecutor(calls) as pool:
        responses = list(pool.map(one, range(calls)))
    for client in clients:
        client.close()
    return responses


def _predict_key(make_api_client, organization) -> str:
    return make_api_client(organization, scopes=("predict",)).full_key


def test_quota_is_exact_across_gateway_processes(gateways, outsider_api, outsider_organization, make_api_client):
    subscription = _subscribe(outsider_api, "free")
    key = _predict_key(make_api_client, outsider_organization)
    responses = _burst(gateways, key, 80, {"inputs": ["slow"]})
    codes = sorted((r.status_code, r.json().get("code")) for r in responses)
    assert codes.count((200, None)) == 50, codes
    assert codes.count((429, "quota_exceeded")) == 30, codes
    assert all(int(r.headers["Retry-After"]) > 0 for r in responses if r.status_code == 429)
    usage = outsider_api.get(f"/api/v1/subscriptions/{subscription['id']}/usage").json()
    assert usage["used"] == 50  # the quota's shared count, at once
    # The days come from the ledger, which each gateway process adds its calls to about once a second.
    wait_for(lambda: DailyUsage.objects.aggregate(n=Sum("calls"))["n"] == 50, timeout_s=30, what="the usage flush")
    usage = outsider_api.get(f"/api/v1/subscriptions/{subscription['id']}/usage").json()
    assert usage["used"] == 50 and sum(day["calls"] for day in usage["daily"]) == 50


def test_rate_limit_holds_across_gateway_processes(gateways, outsider_api, outsider_organization, make_api_client):
    _subscribe(outsider_api, "slow-lane")
    key = _predict_key(make_api_client, outsider_organization)
    started = time.time()
    responses = _burst(gateways, key, 30, {"inputs": ["a"]})
    seconds = int(time.time()) - int(started) + 1  # the one-second windows the burst touched
    ok = [r for r in responses if r.status_code == 200]
    limited = [r for r in responses if r.status_code == 429]
    assert len(ok) + len(limited) == 30
    assert 5 <= len(ok) <= 5 * seconds
    assert {r.json()["code"] for r in limited} == {"rate_limited"}
    assert {r.headers["Retry-After"] for r in limited} == {"1"}


def test_each_gateway_process_stores_the_calls_it_billed_with_no_worker(
    gateways, worker, outsider_api, outsider_organization, make_api_client
):
    """The ledger needs neither the worker nor Redis: each gateway process adds its billed
    calls to the rows about once a second."""
    subscription = _subscribe(outsider_api, "pro")
    key = _predict_key(make_api_client, outsider_organization)
    worker.stop()
    try:
        responses = _burst(gateways, key, 24, {"inputs": ["a"]})
        assert [r.status_code for r in responses] == [200] * 24

        def stored():
            return DailyUsage.objects.filter(subscription_id=subscription["id"]).aggregate(n=Sum("calls"))["n"]

        wait_for(lambda: stored() == 24, timeout_s=30, what="the gateway processes' flushes")
        time.sleep(2)  # more flushes: nothing counted twice
        assert stored() == 24
        assert outsider_api.get(f"/api/v1/subscriptions/{subscription['id']}/usage").json()["used"] == 24
    finally:
        worker.start("local")
