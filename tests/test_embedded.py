"""`make run`'s embedded defaults, for real: SQLite, the filesystem Celery broker, the
local backend, gunicorn. Starts scripts/run.py as a new user would and calls the demo."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# 240 s to start, up to 600 s for the OCR app's first call (its packages on a cold pip cache).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1000)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _read_until(process: subprocess.Popen, marker: str, timeout_s: float) -> str:
    os.set_blocking(process.stdout.fileno(), False)
    output, deadline = "", time.monotonic() + timeout_s
    while marker not in output:
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"run.py did not print {marker!r}:\n{output[-3000:]}")
        chunk = process.stdout.read()
        output += chunk.decode() if chunk else ""
        time.sleep(0.2)
    return output


def test_make_run_serves_the_demo_on_embedded_defaults(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")}
    env.update(MODELBAY_DATA_DIR=str(tmp_path), PORT=str(_free_port()))
    process = subprocess.Popen(
        [sys.executable, "scripts/run.py"], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        output = _read_until(process, "Press Ctrl+C to stop.", timeout_s=240)
        assert re.search(r"demo service: .*", output).group(0) == "demo service:   digits (ready)"
        assert "demo@modelbay.local / modelbay-demo" in output
        url = re.search(r"curl -s -X POST (\S+)", output).group(1)
        key = re.search(r"Authorization: Bearer (mb_\S+)'", output).group(1)
        body = re.search(r"-d '(.+)'", output).group(1)
        request = urllib.request.Request(
            url, data=body.encode(), headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.load(response)
        assert answer["outputs"][0]["label"] == 0
        assert (tmp_path / "db.sqlite3").exists()
        _use_the_ocr_app_as_a_new_user(output, key)
        _scrape_the_metrics_as_printed(output)
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], "runtime processes were left running"


def _scrape_the_metrics_as_printed(output: str) -> None:
    """The curl line run.py prints for Prometheus: the calls above, by route kind."""
    from prometheus_client.parser import text_string_to_metric_families

    url, token = re.search(r"curl -s (\S+/metrics) -H 'Authorization: Bearer (\S+)'", output).groups()
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})) as response:
        text = response.read().decode()
    calls, rejections = {}, {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "modelbay_gateway_calls_total" and sample.value:
                key = (sample.labels["route_kind"], sample.labels["service"], sample.labels["status_class"])
                calls[key] = sample.value
            elif sample.name == "modelbay_gateway_rejections_total" and sample.value:
                rejections[(sample.labels["route_kind"], sample.labels["code"])] = sample.value
    assert calls[("service", "digits", "2xx")] == 1
    assert calls[("app", "text-ocr", "2xx")] >= 1  # the publisher's service behind the app
    assert rejections[("app", "quota_exceeded")] == 1


def _http(method: str, url: str, key: str, body: bytes | None = None, content_type: str = "application/json"):
    """(status, JSON answer, headers)."""
    request = urllib.request.Request(
        url, data=body, method=method, headers={"Authorization": f"Bearer {key}", "Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response), response.headers
    except urllib.error.HTTPError as error:
        return error.code, json.load(error), error.headers


def _use_the_ocr_app_as_a_new_user(output: str, key: str) -> None:
    """The marketplace after `make run`: browse, subscribe to the OCR app on the free plan,
    send it an image file, watch the usage go up, and get 429 once the quota is spent."""
    base = re.search(r"Modelbay is running at (\S+)/", output).group(1)
    apps = {app["slug"]: app for app in _http("GET", f"{base}/api/v1/marketplace", key)[1]}
    assert {"digits", "face-detect", "text-ocr"} <= set(apps)
    status, subscription, _ = _http("POST", f"{base}/api/v1/marketplace/text-ocr/subscribe", key, b'{"plan": "free"}')
    assert status == 201, subscription
    image = (REPO / "demo/packages/examples/invoice.png").read_bytes()
    predict = f"{base}/api/v1/apps/text-ocr/predict"
    deadline = time.monotonic() + 600  # the first start installs the app's packages
    while True:
        status, answer, _ = _http("POST", predict, key, image, "image/png")
        if status != 503 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert status == 200, answer
    assert "Invoice 2041" in answer["outputs"][0]["text"]
    used = [_http("GET", f"{base}/api/v1/subscriptions/{subscription['id']}/usage", key)[1]["used"]]
    quota = subscription["quota"]
    while used[-1] < quota:
        status, answer, headers = _http("POST", predict, key, image, "image/png")
        if status == 429 and answer["code"] == "rate_limited":
            time.sleep(float(headers["Retry-After"]))
            continue
        assert status == 200, answer
        used.append(_http("GET", f"{base}/api/v1/subscriptions/{subscription['id']}/usage", key)[1]["used"])
    assert used == list(range(1, quota + 1))  # every call counted once
    status, answer, headers = _http("POST", predict, key, image, "image/png")
    assert (status, answer["code"]) == (429, "quota_exceeded")
    assert int(headers["Retry-After"]) > 29 * 86400
