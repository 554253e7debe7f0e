"""Autoscaling on load, end to end on real runtimes: a model that takes 50 ms a call, load
stepping 1 -> 32 concurrent callers -> 0 through a real gateway (gunicorn, 2 uvicorn
workers, reporting calls in flight through Redis), the worker's autoscaler turning that into
replicas, and reconcile starting and stopping sandboxed instances.

With ``target_in_flight: 4`` the replicas reach at least 6 within 20 s of the step, come
back down to ``min_replicas`` after the load and the delay, and no call fails.
"""

import time

import httpx
import pytest

from conftest import _delete_all_services, _stop_all_runtimes, _use_backend, _worker_env, python_package, wait_for
from tests.own_services import Gateway
from tests.support import CALL_S, SLEEPY_MODEL, Load

pytestmark = pytest.mark.integration

# The worker's autoscaler, with windows short enough for a test: a 10 s stable window (so a
# 1 s panic window), one tick a second.
WORKER_ENV = {"MODELBAY_AUTOSCALE_STABLE_WINDOW_S": "10", "MODELBAY_AUTOSCALE_TICK_S": "1"}
AUTOSCALING = {"min_replicas": 1, "max_replicas": 8, "target_in_flight": 4, "scale_down_delay_s": 5}
CALLERS = 32


@pytest.fixture
def autoscaling_worker(celery_worker_process, transactional_db):
    _use_backend("local")
    celery_worker_process.ensure("local", **WORKER_ENV)
    yield celery_worker_process
    _delete_all_services()
    _stop_all_runtimes()


@pytest.fixture
def gateway(autoscaling_worker, tmp_path):
    """One gunicorn, two uvicorn workers, on the test database and Redis."""
    gateway = Gateway(_worker_env(), tmp_path / "gateway.log")
    try:
        yield gateway.start()
    finally:
        gateway.stop()


@pytest.mark.timeout(300)
def test_replicas_follow_a_stepped_load_up_and_back_down_and_no_call_fails(gateway, api):
    client = httpx.Client(base_url=gateway, headers={"Authorization": f"Bearer {api.full_key}"}, timeout=30)
    upload = client.post(
        "/api/v1/models", data={"name": "sleepy"}, files={"file": ("m.zip", python_package(SLEEPY_MODEL))}
    )
    assert upload.status_code == 201, upload.text
    body = {"name": "sleepy", "model": "sleepy", "autoscaling": AUTOSCALING}
    assert client.post("/api/v1/services", json=body).status_code == 202

    def service():
        return client.get("/api/v1/services/sleepy").json()

    def ready_instances(data) -> int:
        return sum(1 for i in data.get("instances", []) if i["status"] == "ready")

    wait_for(lambda: service()["status"] == "ready", timeout_s=120, what="the service")
    timeline = []  # (seconds since the step, desired replicas, ready instances)

    def watch(since: float, until, every_s: float = 0.5):
        while not until():
            data = service()
            timeline.append((round(time.monotonic() - since, 1), data["replicas"]["desired"], ready_instances(data)))
            time.sleep(every_s)

    # 1 caller: one replica is enough.
    with Load(gateway, api.full_key, "sleepy", 1) as one:
        time.sleep(5)
    assert service()["replicas"]["desired"] == 1

    # 32 callers at once: at least 6 replicas within 20 s.
    step = time.monotonic()
    with Load(gateway, api.full_key, "sleepy", CALLERS) as many:
        watch(step, lambda: time.monotonic() - step > 25)
    reached = next((t for t, desired, ready in timeline if ready >= 6), None)
    peak = max(desired for _, desired, _ in timeline)

    # Back to 0: down to min_replicas after the stable window and the delay.
    stopped = time.monotonic()
    watch(
        stopped,
        lambda: service()["replicas"]["desired"] == 1
        and ready_instances(service()) == 1
        or time.monotonic() - stopped > 90,
    )
    down_s = time.monotonic() - stopped
    decisions = client.get("/api/v1/services/sleepy/autoscaler").json()["decisions"]

    calls = one.ok + many.ok
    failed = one.failed + many.failed
    print(
        f"\nstepped load 1 -> {CALLERS} -> 0, {CALL_S * 1000:.0f} ms a call, target_in_flight 4: {calls} calls, "
        f"{len(failed)} failed; 6 replicas ready {reached} s after the step, peak {peak}; back to 1 replica "
        f"{down_s:.1f} s after the load stopped; {len(decisions)} decisions, the first: {decisions[-1] if decisions else None}"
    )
    print("timeline (s, desired, ready):", timeline[::4])
    assert not failed, failed[:5]
    assert reached is not None and reached <= 20, timeline
    assert peak <= AUTOSCALING["max_replicas"]
    assert service()["replicas"]["desired"] == 1 and ready_instances(service()) == 1
    assert decisions and {d["mode"] for d in decisions} <= {"stable", "panic"}
