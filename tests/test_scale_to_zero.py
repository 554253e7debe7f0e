"""Scale to zero, end to end on real runtimes, on both backends: a service with
``min_replicas: 0`` runs no instance (no process, no container) once idle for its
``scale_to_zero_after_s``; the next call is held by the gateway (gunicorn, 2 uvicorn
workers) while the worker starts an instance, and answers 200; so do 50 concurrent calls at
zero. Cold starts are counted and timed (the API, the metrics). A service that cannot start
within the cold-start timeout answers 503 with ``Retry-After``, never hangs.
"""

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import _delete_all_services, _stop_all_runtimes, _use_backend, _worker_env, python_package, wait_for
from controlplane.backends import get_backend
from tests.own_services import Gateway

pytestmark = pytest.mark.integration

# The worker's autoscaler with short windows (a 4 s stable window, a tick a second), so a
# service idle for its scale_to_zero_after_s (5 s, the least allowed) goes to zero quickly.
WORKER_ENV = {"MODELBAY_AUTOSCALE_STABLE_WINDOW_S": "4", "MODELBAY_AUTOSCALE_TICK_S": "1"}
TO_ZERO = {"min_replicas": 0, "max_replicas": 4, "scale_down_delay_s": 0, "scale_to_zero_after_s": 5}
METRICS_TOKEN = "scale-to-zero-metrics"
BURST = 50


def _worker(request, celery_worker_process, backend: str):
    if backend == "docker":
        docker_zones = request.getfixturevalue("docker_zones")
        _use_backend("docker", docker_zones)
        zones = ",".join(f"{zone}={endpoint}" for zone, endpoint in docker_zones.items())
        celery_worker_process.ensure("docker", MODELBAY_ZONES=zones, **WORKER_ENV)
    else:
        _use_backend("local")
        celery_worker_process.ensure("local", **WORKER_ENV)
    yield backend
    _delete_all_services()
    _stop_all_runtimes()
    _use_backend("local")


@pytest.fixture(params=["local", "docker"])
def backend_worker(request, celery_worker_process, transactional_db):
    yield from _worker(request, celery_worker_process, request.param)


@pytest.fixture
def local_worker(request, celery_worker_process, transactional_db):
    yield from _worker(request, celery_worker_process, "local")


def _gateway(tmp_path, **env):
    # Every web process's figures on /metrics, whichever process answers the scrape.
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = {
        **_worker_env(),
        "MODELBAY_METRICS_TOKEN": METRICS_TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        **env,
    }
    if "MODELBAY_ZONES" not in env and get_backend().name == "docker":
        from django.conf import settings

        env["MODELBAY_ZONES"] = ",".join(f"{zone}={url}" for zone, url in settings.MODELBAY_ZONES.items())
    return Gateway(env, tmp_path / "gateway.log")


@pytest.fixture
def gateway(backend_worker, tmp_path):
    gateway = _gateway(tmp_path)
    try:
        yield gateway.start()
    finally:
        gateway.stop()


def _client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=90)


def _at_zero(client: httpx.Client, slug: str) -> bool:
    """Desired 0, no instance left, and no process or container of the service running."""
    service = client.get(f"/api/v1/services/{slug}").json()
    if service["replicas"]["desired"] != 0 or any(i["status"] != "stopped" for i in service["instances"]):
        return False
    return not any(running.alive for running in get_backend().list().values())


def _predict(client: httpx.Client, slug: str) -> tuple[int, float, str]:
    started = time.monotonic()
    response = client.post(f"/api/v1/services/{slug}/predict", json={"inputs": [[0.0] * 64]})
    return response.status_code, time.monotonic() - started, response.text[:300]


@pytest.mark.timeout(420)
def test_a_service_goes_to_zero_and_held_calls_wake_it(gateway, api, digits_model, backend_worker):
    client = _client(gateway, api.full_key)
    upload = client.post("/api/v1/models", data={"name": "digits"}, files={"file": digits_model[0].open("rb")})
    assert upload.status_code == 201, upload.text
    created = client.post("/api/v1/services", json={"name": "digits", "model": "digits", "autoscaling": TO_ZERO})
    assert created.status_code == 202, created.text
    assert created.json()["replicas"]["desired"] == 1  # a new service starts with one: its model is loaded once
    wait_for(lambda: client.get("/api/v1/services/digits").json()["status"] == "ready", timeout_s=120, what="ready")

    # Idle: no instance, no process or container.
    went = time.monotonic()
    wait_for(lambda: _at_zero(client, "digits"), timeout_s=60, what="the service at zero")
    print(f"\n[{backend_worker}] at zero {time.monotonic() - went:.1f} s after ready (scale_to_zero_after_s 5)")
    assert client.get("/api/v1/services/digits").json()["status"] == "ready"  # it takes calls: they are held

    # One call at zero: held, then answered.
    status, waited, text = _predict(client, "digits")
    assert status == 200, text
    service = client.get("/api/v1/services/digits").json()
    assert service["cold_starts"]["count"] == 1
    first_start_s = service["cold_starts"]["last_s"]
    assert first_start_s is not None and 0 < first_start_s < waited + 1
    print(f"[{backend_worker}] one call at zero: answered in {waited:.2f} s; cold start {first_start_s:.2f} s")

    # Back to zero, then 50 calls at once: every one answered.
    wait_for(lambda: _at_zero(client, "digits"), timeout_s=60, what="the service at zero again")
    results = _burst([_client(gateway, api.full_key) for _ in range(BURST)], "digits")
    failed = [(status, text) for status, _, text in results if status != 200]
    waits = sorted(waited for _, waited, _ in results)
    print(
        f"[{backend_worker}] {BURST} concurrent calls at zero: {BURST - len(failed)} answered 200, "
        f"{len(failed)} failed; waited p50 {statistics.median(waits):.2f} s, max {waits[-1]:.2f} s"
    )
    assert not failed, failed[:3]

    figures = client.get("/api/v1/services/digits").json()["cold_starts"]
    assert figures["count"] == 2 and figures["p50_s"] is not None
    history = client.get("/api/v1/services/digits/autoscaler").json()
    assert [d["mode"] for d in history["decisions"]].count("cold_start") == 2
    assert any("scaling to zero" in d["reason"] for d in history["decisions"])

    # The gateway counted them: calls held and their wait, cold starts.
    metrics = httpx.get(f"{gateway}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    # Calls past the service's cap on calls in flight wait in its queue, not held: the first
    # call and at least one of the burst were held.
    held = _sample(metrics, "modelbay_gateway_held_seconds_count")
    assert 2 <= held <= BURST + 1, held
    assert _sample(metrics, "modelbay_cold_starts_total") == 2


def _burst(clients: list[httpx.Client], slug: str) -> list[tuple[int, float, str]]:
    """One call on each client, all sent at the same moment (connections made beforehand)."""
    for client in clients:
        client.get("/api/v1/keys")
    start = threading.Barrier(len(clients))

    def call(client: httpx.Client) -> tuple[int, float, str]:
        start.wait()
        return _predict(client, slug)

    with ThreadPoolExecutor(len(clients)) as pool:
        return list(pool.map(call, clients))


def _sample(metrics: str, name: str) -> float:
    """The sum of a metric's samples over its labels."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(name + "{"))


def slow_after(started_before: float) -> str:
    """A model that loads at once in its first instance (started before ``started_before``,
    a time.time()), and takes 30 s in any started later: its cold starts are too slow."""
    return f"""
import time

class Model:
    def load(self, model_dir):
        if time.time() > {started_before}:
            time.sleep(30)

    def predict(self, inputs):
        return inputs
"""


@pytest.mark.timeout(180)
def test_a_cold_start_past_its_timeout_answers_503_with_retry_after(local_worker, api, tmp_path):
    # The timeout is the gateway's own, whatever the backend.
    gateway = _gateway(tmp_path, MODELBAY_COLD_START_TIMEOUT_S="2")
    url = gateway.start()
    try:
        client = _client(url, api.full_key)
        package_made = time.time()
        package = python_package(slow_after(package_made + 15))
        upload = client.post("/api/v1/models", data={"name": "slow"}, files={"file": ("m.zip", package)})
        assert upload.status_code == 201, upload.text
        created = client.post("/api/v1/services", json={"name": "slow", "model": "slow", "autoscaling": TO_ZERO})
        assert created.status_code == 202, created.text
        wait_for(lambda: client.get("/api/v1/services/slow").json()["status"] == "ready", timeout_s=60, what="ready")
        wait_for(lambda: _at_zero(client, "slow"), timeout_s=60, what="the service at zero")
        wait_for(lambda: time.time() > package_made + 15, timeout_s=30, what="the slow starts to come")

        started = time.monotonic()
        response = client.post("/api/v1/services/slow/predict", json={"inputs": [1]})
        waited = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "unavailable"
        assert "starting from zero" in response.json()["detail"]
        assert int(response.headers["Retry-After"]) >= 1
        assert client.get("/api/v1/services/slow").json()["cold_starts"]["starting"] is True
        print(f"\nheld {waited:.2f} s (cold-start timeout 2 s), then 503 Retry-After {response.headers['Retry-After']}")
    finally:
        gateway.stop()
