"""A long prediction completes when its service allows it; a caller that hangs up cancels it.

On the production shape: PostgreSQL, Redis, a real gunicorn with two uvicorn workers
(``gunicorn.conf.py``), started as the image starts it, with gunicorn's DEFAULT ``--timeout``
(30 s), and a python model whose every call sleeps as many seconds as its first input says.

- A call of 45 s, longer than every default timeout on its way (gunicorn's 30 s, a service's
  default deadline MODELBAY_PREDICT_TIMEOUT of 30 s), answers 200 with the model's output when
  its service's ``timeout_s`` is 120; on a service left at the default, the same call answers
  504 ``upstream_timeout`` after its 30 s. Neither gunicorn worker was killed for it (a sync
  worker silent for 30 s would have been).
- A caller that hangs up on a 60 s call: the gateway's connection to the runtime instance is
  closed within a few seconds, long before the model would have answered; ``/metrics`` shows
  no call in flight and one ``client_closed``; the call's slot is free again (with a cap of one
  call in flight per gateway process and no queue, the next calls are answered, not refused).

What is timed here are deadlines, not speed: each bound is several seconds wide.
"""

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import REPO, _worker_env, python_package, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _quiet_httpx():
    """Not a line per request in the output (the root logger is at INFO)."""
    logger = logging.getLogger("httpx")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


# A python model that sleeps as many seconds as its first input says, then says so.
SLEEPY_MODEL = """
import time

class Model:
    def load(self, model_dir):
        pass

    def predict(self, inputs):
        seconds = float(inputs[0])
        time.sleep(seconds)
        return [f"slept {seconds:g} s"]
"""

LONG_S = 45  # longer than gunicorn's default --timeout (30 s) and MODELBAY_PREDICT_TIMEOUT (30 s)
DEFAULT_TIMEOUT_S = 30  # MODELBAY_PREDICT_TIMEOUT, a service's deadline unless it sets timeout_s
PATIENT_TIMEOUT_S = 120
HANG_UP_S = 60  # the call a caller hangs up on: the model would answer after this
TOKEN = "metrics-token-for-the-long-call-test"
# A cap of one call in flight per service in each of the two gateway processes, and no queue
# behind it: a slot the cancelled call kept would refuse the next call to its process (429).
CAPS = {"MODELBAY_SERVICE_MAX_IN_FLIGHT": "2", "MODELBAY_IN_FLIGHT_QUEUE": "0"}


# --- the production shape: PostgreSQL, Redis, gunicorn with two uvicorn workers -------------
@dataclass
class Gateway:
    url: str
    process: subprocess.Popen
    log_path: str

    def workers(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children()

    def log(self) -> str:
        with open(self.log_path, errors="replace") as log:
            return log.read()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/accounts/login/", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def gateway(worker, tmp_path):
    """One gunicorn as the image runs it (``--workers 2``, no ``--timeout``: its default 30 s)."""
    port = _free_port()
    env = {
        **_worker_env(),
        **CAPS,
        "WEB_CONCURRENCY": "2",
        "MODELBAY_METRICS_TOKEN": TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
    }
    log_path = tmp_path / "gateway.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2", "--no-control-socket"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        gateway = Gateway(f"http://127.0.0.1:{port}", process, str(log_path))
        wait_for(lambda: _up(gateway.url) or process.poll() is not None, timeout_s=60, what="the gateway")
        assert process.poll() is None, gateway.log()[-3000:]
        wait_for(lambda: len(gateway.workers()) == 2, timeout_s=30, what="gunicorn's two workers")
        yield gateway
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# --- the site's API over HTTP -----------------------------------------------------------------
# Through the web server, not Django's test client: a key used in this process would be noted
# by its own flusher thread, whose database connection outlives the test.
def _call(url: str, key: str, method: str, path: str, *, timeout: float = 15, **kwargs) -> httpx.Response:
    return httpx.request(method, url + path, headers={"Authorization": f"Bearer {key}"}, timeout=timeout, **kwargs)


def _deploy_sleepy(url: str, key: str, name: str) -> None:
    response = _call(url, key, "POST", "/api/v1/models", data={"name": name},
                     files={"file": (f"{name}.zip", python_package(SLEEPY_MODEL))})  # fmt: skip
    assert response.status_code == 201, response.text
    response = _call(url, key, "POST", "/api/v1/services", json={"name": name, "model": name})
    assert response.status_code == 202, response.text


def _wait_ready(url: str, key: str, slug: str) -> dict:
    def ready():
        body = _call(url, key, "GET", f"/api/v1/services/{slug}").json()
        assert body.get("status") != "failed", body
        return body if body.get("status") == "ready" else None

    return wait_for(ready, timeout_s=180, what=f"service {slug} to be ready")


def _predict(url: str, key: str, slug: str, seconds: float, timeout: float) -> tuple[float, httpx.Response]:
    """(seconds until answered, the answer) of one call asking the model to sleep ``seconds``."""
    started = time.monotonic()
    response = _call(url, key, "POST", f"/api/v1/services/{slug}/predict", json={"inputs": [seconds]}, timeout=timeout)
    return time.monotonic() - started, response


def _scrape(url: str) -> dict[str, list[tuple[dict, float]]]:
    """/metrics, summed over the gateway's processes: {sample name: [(labels, value)]}."""
    response = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=15)
    assert response.status_code == 200, response.text[:500]
    samples: dict[str, list[tuple[dict, float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def _total(samples: dict, name: str, **labels: str) -> float:
    return sum(value for found, value in samples.get(name, []) if all(found.get(k) == v for k, v in labels.items()))


# --- 1. a long call, where its service allows it and where not -------------------------------------
@pytest.mark.timeout(240)
def test_a_call_longer_than_every_default_timeout_completes_when_its_service_allows_it(gateway, api):
    url, key = gateway.url, api.full_key
    for slug in ("patient", "strict"):
        _deploy_sleepy(url, key, slug)
    for slug in ("patient", "strict"):
        _wait_ready(url, key, slug)
    response = _call(url, key, "PATCH", "/api/v1/services/patient", json={"timeout_s": PATIENT_TIMEOUT_S})
    assert response.status_code == 202, response.text
    assert response.json()["timeout_s"] == PATIENT_TIMEOUT_S
    assert _call(url, key, "GET", "/api/v1/services/strict").json()["timeout_s"] == DEFAULT_TIMEOUT_S
    workers_before = {worker.pid for worker in gateway.workers()}

    # The same 45 s call to both services at once (each has its own instance).
    results: dict[str, tuple[float, httpx.Response]] = {}

    def call(slug: str) -> None:
        try:
            results[slug] = _predict(url, key, slug, LONG_S, timeout=PATIENT_TIMEOUT_S + 30)
        except httpx.TransportError as error:  # no answer at all: said below
            results[slug] = (float("nan"), error)

    threads = [threading.Thread(target=call, args=(slug,)) for slug in ("patient", "strict")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for slug, (took, response) in results.items():
        assert isinstance(response, httpx.Response), f"{slug}: no answer ({response!r})"
    took, response = results["patient"]
    print(f"\npatient (timeout_s {PATIENT_TIMEOUT_S}): {response.status_code} after {took:.1f} s")
    assert response.status_code == 200, response.text
    assert response.json()["outputs"] == [f"slept {LONG_S} s"]
    assert took >= LONG_S

    took, response = results["strict"]
    print(f"strict (timeout_s default {DEFAULT_TIMEOUT_S}): {response.status_code} after {took:.1f} s: {response.text}")
    assert response.status_code == 504, response.text
    assert response.json()["code"] == "upstream_timeout"
    assert DEFAULT_TIMEOUT_S - 5 <= took <= DEFAULT_TIMEOUT_S + 10  # its deadline, not gunicorn's nor the model's

    # gunicorn's default --timeout killed no worker for it (it would have replaced one).
    assert {worker.pid for worker in gateway.workers()} == workers_before
    assert "WORKER TIMEOUT" not in gateway.log()
    samples = _scrape(url)
    assert _total(samples, "modelbay_gateway_rejections_total", code="upstream_timeout") == 1
    assert _total(samples, "modelbay_gateway_calls_total", service="patient", status_class="2xx") == 1
    assert _total(samples, "modelbay_gateway_in_flight") == 0


# --- 2. a caller that hangs up ------------------------------------------------------------------
def _socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets a process holds (its /proc/PID/fd links ``socket:[N]``)."""
    inodes = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for name in names:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    return inodes


def _unix_peers() -> dict[int, int]:
    """{inode: its peer's inode} of the connected Unix stream sockets of this network namespace
    (``ss -x``); a peer may live in another namespace (a sandboxed runtime's)."""
    output = subprocess.run(["ss", "-xnH", "state", "connected"], check=True, capture_output=True, text=True).stdout
    peers = {}
    for line in output.splitlines():
        fields = line.split()
        # Netid State Recv-Q Send-Q Local-Address Inode Peer-Address Peer-Inode
        if len(fields) >= 7 and fields[0] == "u_str" and fields[-1].isdigit() and fields[-3].isdigit():
            peers[int(fields[-3])] = int(fields[-1])
    return peers


def _runtime_processes(instance_id: str) -> list[psutil.Process]:
    """The instance's processes: the local backend starts them with ``--instance-id NS/ID``."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if any(arg.endswith(f"/{instance_id}") for arg in cmdline) and "--instance-id" in cmdline:
            found.append(process)
    return found


class Connections:
    """The connections from the gateway's worker processes to one runtime instance: the
    workers' sockets whose peer is a socket the instance's processes hold."""

    def __init__(self, gateway: Gateway, instance_id: str):
        self.workers = gateway.workers()
        self.runtime = _runtime_processes(instance_id)
        assert self.runtime, f"no process of instance {instance_id}"

    def now(self) -> set[tuple[int, int]]:
        """{(gateway worker's socket, the runtime's end)} right now."""
        runtime_ends = self.runtime_ends()
        peers = _unix_peers()
        return {
            (inode, peers[inode])
            for worker in self.workers
            for inode in _socket_inodes(worker.pid)
            if peers.get(inode) in runtime_ends
        }

    def runtime_ends(self) -> set[int]:
        return set().union(*(_socket_inodes(process.pid) for process in self.runtime))


def _raw_call(url: str, key: str, slug: str, seconds: float) -> socket.socket:
    """A call sent on a socket of its own, its answer not read."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"inputs": [seconds]}).encode()
    request = (
        f"POST /api/v1/services/{slug}/predict HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    client = socket.create_connection((host, int(port)), timeout=5)
    client.sendall(request)
    return client


@pytest.mark.timeout(200)
def test_a_caller_that_hangs_up_cancels_its_call(gateway, api):
    if shutil.which("ss") is None:
        pytest.fail("This test counts the gateway's connections to the runtime with `ss` (iproute2).")
    from controlplane.models import Instance

    url, key = gateway.url, api.full_key
    _deploy_sleepy(url, key, "sleepy")
    body = _wait_ready(url, key, "sleepy")
    (instance,) = body["instances"]
    endpoint = Instance.objects.get(pk=instance["id"]).endpoint
    assert endpoint.startswith("unix://"), endpoint
    connections = Connections(gateway, instance["id"])
    before = connections.now()  # none: the service has had no call yet

    client = _raw_call(url, key, "sleepy", HANG_UP_S)
    sent = time.monotonic()
    # The call reaches the runtime: one more connection from the gateway to the instance.
    during = wait_for(lambda: connections.now() - before, timeout_s=10, what="the call to reach the runtime")
    assert len(during) == 1, during
    samples = _scrape(url)
    assert _total(samples, "modelbay_gateway_in_flight", service="sleepy") == 1
    time.sleep(max(0.0, 1.0 - (time.monotonic() - sent)))
    client.settimeout(0)
    with pytest.raises(BlockingIOError):
        client.recv(1)  # no answer yet: the model sleeps for a minute
    client.close()  # the caller hangs up
    hung_up = time.monotonic()

    # The gateway hangs up on the runtime: the call's connection is closed, both ends, within
    # a few seconds (the model would answer after a minute), and none is opened in its place.
    ((gateway_end, runtime_end),) = during
    wait_for(lambda: not connections.now() & during, timeout_s=5, interval_s=0.05,
             what="the gateway to close its connection to the runtime")  # fmt: skip
    closed_after = time.monotonic() - hung_up
    wait_for(lambda: runtime_end not in connections.runtime_ends(), timeout_s=5, interval_s=0.05,
             what="the runtime to see the call hung up")  # fmt: skip
    assert connections.now() == before
    print(f"\nhung up {hung_up - sent:.1f} s after sending a {HANG_UP_S} s call; the gateway's connection to "
          f"the runtime ({endpoint}) closed {closed_after:.2f} s later, at both ends")  # fmt: skip

    # /metrics: no call in flight, one call its caller closed, none timed out.
    def settled():
        samples = _scrape(url)
        return samples if _total(samples, "modelbay_gateway_in_flight", service="sleepy") == 0 else None

    samples = wait_for(settled, timeout_s=5, what="modelbay_gateway_in_flight to be 0")
    assert _total(samples, "modelbay_gateway_rejections_total", code="client_closed") == 1
    assert _total(samples, "modelbay_gateway_rejections_total", code="upstream_timeout") == 0

    # The call's slot is free: one call in flight per process and no queue, yet every next
    # call (a new connection each, whichever process takes it) is answered, not refused.
    statuses = [_predict(url, key, "sleepy", 0.01, timeout=15)[1].status_code for _ in range(8)]
    assert statuses == [200] * 8
    assert time.monotonic() - sent < HANG_UP_S  # all of it before the model would have answered
