"""Prometheus' scrape at /metrics across several gunicorn workers: every call counted once,
whichever process served it, and still after a worker dies; the token guards it."""

import os
import signal
from concurrent.futures import ThreadPoolExecutor
import urllib.error
import urllib.request

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import wait_for
from tests.test_embedded_releases import EmbeddedStack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TOKEN = "metrics-token-for-tests"
SAMPLE = {"inputs": [[0.0] * 64]}


def _scrape(url: str, token: str | None = TOKEN) -> tuple[int, str]:
    request = urllib.request.Request(f"{url}/metrics")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _samples(text: str, name: str) -> dict[tuple, float]:
    """{sorted label items: value} of one sample name."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def _total(text: str, name: str, **labels: str) -> float:
    return sum(value for key, value in _samples(text, name).items() if all((k, v) in key for k, v in labels.items()))


@pytest.fixture
def stack(tmp_path):
    stack = EmbeddedStack(tmp_path, web_args=("--workers", "2"))  # two processes
    stack.env.update(MODELBAY_METRICS_TOKEN=TOKEN, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"))
    try:
        demo = stack.start()
        wait_for(
            lambda: stack.call("GET", f"/api/v1/services/{demo['service']}")[1].get("status") == "ready",
            timeout_s=180,
            what="the demo service",
        )
        yield stack, demo["service"]
    finally:
        stack.stop()


def test_every_call_is_counted_once_across_worker_processes(stack):
    stack, slug = stack
    assert _scrape(stack.url, token=None)[0] == 401
    assert _scrape(stack.url, token="not-the-token")[0] == 401

    # Calls 4 at once, in rounds of 40, until both processes have counted some: which
    # process accepts a connection is the kernel's choice, so one round may go to one alone.
    calls = 0
    with ThreadPoolExecutor(4) as pool:
        for _ in range(10):
            statuses = list(
                pool.map(lambda _: stack.call("POST", f"/api/v1/services/{slug}/predict", SAMPLE)[0], range(40))
            )
            assert statuses == [200] * 40
            calls += 40
            if len(list((stack.data_dir / "prometheus").glob("counter_*.db"))) >= 2:
                break
    counter_files = list((stack.data_dir / "prometheus").glob("counter_*.db"))
    assert len(counter_files) >= 2, f"{calls} calls did not spread over both processes"
    assert stack.call("POST", "/api/v1/services/no-such-service/predict", SAMPLE)[0] == 404

    status, text = _scrape(stack.url)
    assert status == 200
    calls_total = "modelbay_gateway_calls_total"
    assert _total(text, calls_total, route_kind="service", service=slug, status_class="2xx") == calls
    assert _total(text, calls_total, route_kind="service", service="", status_class="4xx") == 1
    assert _total(text, "modelbay_gateway_rejections_total", route_kind="service", code="not_found") == 1
    assert _total(text, "modelbay_gateway_call_seconds_count", route_kind="service") == calls + 1
    assert _total(text, "modelbay_gateway_upstream_seconds_count", service=slug) == calls
    assert _total(text, "modelbay_gateway_in_flight", service=slug) == 0
    ready = _samples(text, "modelbay_instances_ready")
    assert {dict(key)["zone"]: value for key, value in ready.items() if dict(key)["service"] == slug} == {
        "zone-a": 1,
        "zone-b": 1,
    }  # the demo's two replicas

    # A worker dies: what it counted stays counted, and its replacement counts on.
    master = psutil.Process(stack.children[1].pid)
    victim = master.children()[0]
    os.kill(victim.pid, signal.SIGKILL)
    wait_for(lambda: len(master.children()) == 2 and victim.pid not in {c.pid for c in master.children()},
             what="gunicorn to replace its worker")  # fmt: skip
    assert stack.call("POST", f"/api/v1/services/{slug}/predict", SAMPLE)[0] == 200
    text = _scrape(stack.url)[1]
    assert _total(text, calls_total, route_kind="service", service=slug, status_class="2xx") == calls + 1
