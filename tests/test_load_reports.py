"""The load reports end to end: calls in flight counted by every gateway process, added up
where the autoscaler reads them (``controlplane.load``).

A python model that takes 0.5 s a call, 8 callers calling it again as soon as answered for
about 5 s, each call on a new connection (so that they spread over the web processes): the
service has about 8 calls in flight all along, whichever process holds them. On two shapes:

- the production shape: one gunicorn with two uvicorn workers, reports through Redis; both
  processes report the service, and the sum is about 8;
- the embedded default: one web process without Redis, reports in files under its run folder.

A few seconds after the callers stop the load reads 0, then the service is no longer
reported at all.
"""

import statistics
import threading
import time

import httpx
import pytest

from conftest import (
    _delete_all_services,
    _stop_all_runtimes,
    _use_backend,
    _worker_env,
    python_package,
    wait_for,
)
from controlplane import load
from controlplane.models import Service
from tests.own_services import Gateway
from tests.test_embedded_releases import EmbeddedStack
from tests.test_slow_tenant import _deploy, _up, _wait_ready

pytestmark = pytest.mark.integration

CALL_S = 0.5  # one call of the model
CALLERS = 8
LOAD_S = 5.0
SETTLE_S = 2.0  # the first reports cover the start of the load: sampled from then on

MODEL = f"""
import time

class Model:
    def load(self, model_dir):
        pass

    def predict(self, inputs):
        time.sleep({CALL_S})
        return inputs
"""

# The runtime's thread pool for python models (4 by default): every call held at the model at once.
RUNTIME_ENV = {"MODELBAY_RUNTIME_WORKERS": "16"}


def _call_for(url: str, key: str, slug: str, seconds: float, statuses: list[int]) -> None:
    client = httpx.Client(
        base_url=url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=15,
        limits=httpx.Limits(max_keepalive_connections=0),  # a new connection each call
    )
    deadline = time.monotonic() + seconds
    with client:
        while time.monotonic() < deadline:
            try:
                statuses.append(client.post(f"/api/v1/services/{slug}/predict", json={"inputs": [1]}).status_code)
            except httpx.TransportError:
                statuses.append(0)


def _load_while_calling(url: str, key: str, slug: str, read) -> tuple[list[load.Load | None], list[int]]:
    """``read()`` every quarter of a second while the callers call, after SETTLE_S."""
    statuses: list[int] = []
    callers = [threading.Thread(target=_call_for, args=(url, key, slug, LOAD_S, statuses)) for _ in range(CALLERS)]
    for caller in callers:
        caller.start()
    time.sleep(SETTLE_S)
    samples = []
    while any(caller.is_alive() for caller in callers) and len(samples) < (LOAD_S - SETTLE_S) * 4:
        samples.append(read())
        time.sleep(0.25)
    for caller in callers:
        caller.join()
    return samples, statuses


def _check(samples: list[load.Load | None], statuses: list[int], read, *, processes: int) -> None:
    print(f"\nload reports while {CALLERS} callers call: {samples}")
    assert statuses and set(statuses) == {200}, f"calls that failed: {[s for s in statuses if s != 200][:10]}"
    assert None not in samples, samples
    assert 6 <= statistics.median(s.in_flight for s in samples) <= 10
    assert max(s.processes for s in samples) == processes
    # Over: the average falls to 0 within a report or two, then the service drops out.
    wait_for(lambda: (found := read()) is None or found.in_flight == 0, timeout_s=5, what="a load of 0")
    wait_for(lambda: read() is None, timeout_s=15, what="the service no longer reported")


# --- the production shape: PostgreSQL, Redis, two uvicorn workers --------------------------
@pytest.fixture
def runtimes(celery_worker_process, transactional_db):
    _use_backend("local")
    celery_worker_process.ensure("local", **RUNTIME_ENV)
    yield celery_worker_process
    _delete_all_services()
    _stop_all_runtimes()


@pytest.fixture
def gateway(runtimes, tmp_path):
    """One gunicorn, two uvicorn workers, on the test database and Redis."""
    gateway = Gateway(_worker_env(), tmp_path / "gateway.log")
    try:
        yield gateway.start()
    finally:
        gateway.stop()


@pytest.mark.timeout(120)
def test_two_gateway_processes_report_their_calls_in_flight_through_redis(gateway, api, settings):
    assert settings.REDIS_URL, "the production shape reports through Redis"
    _deploy(gateway, api.full_key, "loaded", "loaded.zip", python_package(MODEL))
    _wait_ready(gateway, api.full_key, "loaded")
    service_id = Service.objects.get(organization=api.organization, slug="loaded").pk

    def read():
        return load.read(service_id)

    samples, statuses = _load_while_calling(gateway, api.full_key, "loaded", read)
    _check(samples, statuses, read, processes=2)


# --- the embedded default: SQLite, one web process, no Redis -------------------------------
@pytest.mark.timeout(300)
def test_the_embedded_default_reports_in_files(tmp_path):
    stack = EmbeddedStack(tmp_path)
    stack.env.update(RUNTIME_ENV)
    try:
        stack.start()
        key = (
            stack.manage("create_api_key", "--org", "loaded", "--email", "loaded@example.com", "--name", "load")
            .strip()
            .splitlines()[-1]
        )
        wait_for(lambda: _up(stack.url), timeout_s=60, what="the web process")
        _deploy(stack.url, key, "loaded", "loaded.zip", python_package(MODEL))
        _wait_ready(stack.url, key, "loaded")
        reports = load.FileStore(tmp_path / "run" / "load")

        def read():
            loads = reports.read_all()  # the only service called
            assert len(loads) <= 1, loads
            return next(iter(loads.values()), None)

        samples, statuses = _load_while_calling(stack.url, key, "loaded", read)
        _check(samples, statuses, read, processes=1)
    finally:
        stack.stop()
