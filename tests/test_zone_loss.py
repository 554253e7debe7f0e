"""A zone is lost under load, and nothing fails: two zones on two Docker engines (zone-a on
this machine's, zone-b on a second ``dockerd`` of the test's own), continuous callers
through a real gateway (gunicorn, two uvicorn workers), and zone-b's engine killed with
everything it runs, at once, as a zone is lost.

No call fails (the calls in flight on zone-b are sent again to zone-a); the service is
``degraded`` saying which zone it lost; replacements are ready in zone-a within seconds;
``/api/v1/zones`` reports zone-b unreachable. When the engine is back, zone-b's instances
start there again and the replacements drain: one instance per zone again, never fewer
than the replicas ready meanwhile.
"""

import threading
import time

import httpx
import pytest

from conftest import DOCKER_SOCKET, _worker_env, python_package, wait_for, worker_on_zones
from tests.own_services import Gateway
from tests.support import CALL_S, SLEEPY_MODEL, Load, deploy, upload, wait_status

pytestmark = [pytest.mark.integration, pytest.mark.docker]

CALLERS = 8
REPLICAS = 2
# The periodic pass at its default: the worker notices the lost engine, and its return, by
# the engine's event stream (controlplane.backends.docker), not by a pass every second.
RECONCILE_INTERVAL_S = "10"


@pytest.fixture
def zones_worker(celery_worker_process, transactional_db, own_docker_engine):
    """zone-a on this machine's engine, zone-b on the test's own, which the test kills."""
    zones = {"zone-a": f"unix://{DOCKER_SOCKET}", "zone-b": own_docker_engine.url}
    yield from worker_on_zones(celery_worker_process, zones, MODELBAY_RECONCILE_INTERVAL=RECONCILE_INTERVAL_S)


@pytest.fixture
def gateway(zones_worker, tmp_path):
    env = {**_worker_env(), "MODELBAY_RUNTIME_BACKEND": "docker", **zones_worker.extra_env}
    gateway = Gateway(env, tmp_path / "gateway.log")
    try:
        yield gateway.start()
    finally:
        gateway.stop()


class Watch:
    """Reads the service and the zones through the gateway every 0.2 s, in a thread: the
    fewest ready instances it saw, and when the first view matching ``until`` came."""

    def __init__(self, client: httpx.Client):
        self.client = client
        self.fewest_ready: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            ready = len(_ready(self.client.get("/api/v1/services/echo").json()))
            self.fewest_ready = ready if self.fewest_ready is None else min(self.fewest_ready, ready)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)


def _ready(service: dict) -> list[dict]:
    return [i for i in service["instances"] if i["status"] == "ready"]


def _reachable(client: httpx.Client, name: str) -> bool | None:
    """Whether /api/v1/zones reports the zone reachable (None: not recorded yet)."""
    zones = client.get("/api/v1/zones").json()
    return next((zone["reachable"] for zone in zones if zone["name"] == name), None)


@pytest.mark.timeout(300)
def test_a_zone_lost_under_load_costs_no_call_and_its_capacity_comes_back(gateway, api, own_docker_engine):
    upload(api, "echo", "echo.zip", python_package(SLEEPY_MODEL))
    deploy(api, "echo", "echo", replicas=REPLICAS)
    body = wait_status(api, "echo", timeout_s=120)
    assert sorted(i["zone"] for i in body["instances"]) == ["zone-a", "zone-b"]
    client = httpx.Client(base_url=gateway, headers={"Authorization": f"Bearer {api.full_key}"}, timeout=10)

    def service() -> dict:
        return client.get("/api/v1/services/echo").json()

    with Load(gateway, api.full_key, "echo", CALLERS) as load:
        time.sleep(3)  # calls on both zones
        before_kill = load.ok
        killed = time.monotonic()
        own_docker_engine.kill()

        def replaced():
            ready = _ready(service())
            return len(ready) >= REPLICAS and all(i["zone"] == "zone-a" for i in ready)

        wait_for(replaced, timeout_s=30, interval_s=0.1, what=f"{REPLICAS} ready instances in zone-a")
        replaced_s = time.monotonic() - killed
        lost = service()
        assert lost["status"] == "degraded" and "Zone zone-b is lost" in lost["error"], lost
        # Recorded by the periodic pass.
        wait_for(lambda: _reachable(client, "zone-b") is False, timeout_s=15, what="zone-b reported unreachable")
        reported_s = time.monotonic() - killed
        zones = {zone["name"]: zone for zone in client.get("/api/v1/zones").json()}
        assert zones["zone-a"]["reachable"] and "The Docker engine of zone-b" in zones["zone-b"]["reason"]
        time.sleep(2)
        during_loss = load.ok - before_kill

        with Watch(client) as watch:
            own_docker_engine.start()
            returned = time.monotonic()

            def spread():
                body = service()
                zones = sorted(i["zone"] for i in body["instances"])
                return body["status"] == "ready" and zones == ["zone-a", "zone-b"] and len(_ready(body)) == 2

            wait_for(spread, timeout_s=90, interval_s=0.2, what="one ready instance per zone again")
            respread_s = time.monotonic() - returned
        wait_for(lambda: _reachable(client, "zone-b"), timeout_s=15, what="zone-b reported reachable")
        time.sleep(1)

    print(
        f"\nzone-b's engine killed under {CALLERS} callers ({CALL_S * 1000:.0f} ms a call): {load.ok} calls answered, "
        f"{len(load.failed)} failed ({during_loss} answered while zone-b was lost); {REPLICAS} ready in zone-a "
        f"{replaced_s:.1f} s after the kill, zone-b reported unreachable after {reported_s:.1f} s; spread over both zones again {respread_s:.1f} s after the engine was "
        f"back (fewest ready meanwhile: {watch.fewest_ready})"
    )
    assert not load.failed, load.failed[:5]
    assert watch.fewest_ready is not None and watch.fewest_ready >= REPLICAS
