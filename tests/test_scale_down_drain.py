"""A scale-down drains before it stops, on real sandboxed runtimes: the extra instance leaves
the routing table at once (``draining``), answers the calls it has, and is stopped after
MODELBAY_DRAIN_S (the ``echo_service`` of tests/conftest.py)."""

import threading
import time

import pytest
from django.db import connection
from rest_framework.test import APIClient

from conftest import wait_for
from controlplane.backends import get_backend
from tests.support import predict

pytestmark = pytest.mark.integration

CALLS = 6  # round robin over both instances: each has calls in flight


@pytest.mark.timeout(180)
def test_a_scale_down_answers_the_calls_in_flight_then_stops_the_instance(echo_service, api):
    assert api.patch("/api/v1/services/echo", {"replicas": 2}, format="json").status_code == 202
    two = wait_for(lambda: _ready(api) if len(_ready(api)) == 2 else None, what="2 ready instances")
    answers: list[int] = []

    def call() -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {api.full_key}")
        try:
            # 3 s over "slow": longer than the drain time (MODELBAY_DRAIN_S, 2 s).
            answers.append(predict(client, "echo", ["slow"]).status_code)
        finally:
            connection.close()  # this thread's own

    callers = [threading.Thread(target=call) for _ in range(CALLS)]
    for caller in callers:
        caller.start()
    time.sleep(1)  # the calls are in flight
    assert api.patch("/api/v1/services/echo", {"replicas": 1}, format="json").status_code == 202

    def draining():
        instances = api.get("/api/v1/services/echo").json()["instances"]
        return [i["id"] for i in instances if i["status"] == "draining"]

    (drained,) = wait_for(draining, timeout_s=10, interval_s=0.1, what="an instance draining")
    assert predict(api, "echo", ["quick"]).status_code == 200  # a new call goes to the instance that stays
    for caller in callers:
        caller.join(timeout=60)

    assert answers == [200] * CALLS
    wait_for(lambda: drained not in get_backend().list(), timeout_s=30, what="the drained instance to stop")
    remaining = api.get("/api/v1/services/echo").json()
    assert [i["id"] for i in remaining["instances"]] == list(set(two) - {drained})
    assert remaining["status"] == "ready"


def _ready(api) -> list[str]:
    return [i["id"] for i in api.get("/api/v1/services/echo").json()["instances"] if i["status"] == "ready"]
