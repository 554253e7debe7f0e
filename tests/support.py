"""What the end-to-end tests share: API steps of a user, a bound for observed traffic
shares, and small python models."""

import math
import threading
import time

import httpx
from django.db import connection

from django.core.files.uploadedfile import SimpleUploadedFile

from conftest import python_package, wait_for


def upload(api, name: str, filename: str, content: bytes) -> dict:
    response = api.post(
        "/api/v1/models", {"name": name, "file": SimpleUploadedFile(filename, content)}, format="multipart"
    )
    assert response.status_code == 201, response.content
    return response.json()


def deploy(api, name: str, model: str, replicas: int = 1, **extra) -> dict:
    body = {"name": name, "model": model, "replicas": replicas, **extra}
    response = api.post("/api/v1/services", body, format="json")
    assert response.status_code == 202, response.content
    return response.json()


def wait_status(api, slug: str, statuses=("ready",), timeout_s: float = 90) -> dict:
    def settled():
        body = api.get(f"/api/v1/services/{slug}").json()
        return body if body["status"] in statuses else None

    return wait_for(settled, timeout_s=timeout_s, what=f"service {slug} to be {'/'.join(statuses)}")


def assert_uninstallable_requirements_fail_the_service(api) -> None:
    """A python model whose requirements do not install: the service ends failed with pip's words."""
    package = python_package(NUMPY_MODEL, 'requirements: ["modelbay-no-such-package-4f9c==0.0.1"]\n')
    upload(api, "broken-reqs", "broken.zip", package)
    deploy(api, "broken-reqs", "broken-reqs")
    body = wait_status(api, "broken-reqs", statuses=("failed",), timeout_s=300)
    assert "Installing the model's packages failed" in body["error"]
    assert "modelbay-no-such-package-4f9c" in body["error"]


def assert_share(hits: int, calls: int, expected: float, *, sigmas: float = 4.0, what: str = "the share") -> None:
    """``hits`` of ``calls`` independent weighted-random calls went one way, where each goes
    that way with probability ``expected`` (a fraction): the observed share is within
    ``sigmas`` standard deviations of it, sigma = sqrt(p(1-p)/n). A fixed bound in points
    fails by chance more often the fewer the calls; this one is as tight as the sample
    allows and fails by chance one run in about 16,000 (at 4 sigma, two-sided).
    """
    assert calls > 0, f"no calls to measure {what} on"
    share = hits / calls
    bound = sigmas * math.sqrt(expected * (1 - expected) / calls)
    assert abs(share - expected) <= bound, (
        f"{what}: {100 * share:.2f}% of {calls} calls, expected {100 * expected:g}% "
        f"± {100 * bound:.2f} points ({sigmas:g} sigma)"
    )


def predict(api, slug: str, inputs, **extra):
    return api.post(f"/api/v1/services/{slug}/predict", {"inputs": inputs}, format="json", **extra)


FAILING_LOAD = """
class Model:
    def load(self, model_dir):
        raise ValueError("weights file is corrupt")

    def predict(self, inputs):
        return inputs
"""


ECHO_MODEL = """
import time

class Model:
    def load(self, model_dir):
        self.prefix = open(model_dir + "/prefix.txt").read().strip()

    def predict(self, inputs):
        out = []
        for item in inputs:
            if item == "slow":
                time.sleep(3)
            out.append(len(item) if isinstance(item, bytes) else f"{self.prefix}{item}")
        return out
"""


NUMPY_MODEL = """
import numpy

class Model:
    def load(self, model_dir):
        pass

    def predict(self, inputs):
        return [float(numpy.sum(item)) for item in inputs]
"""


def runtime_http(endpoint: str):
    """An httpx client calling a runtime directly at its endpoint: a Unix socket
    (``unix:///path``, instances on this host) or ``http://host:port``."""
    import httpx

    from runtime.client import UNIX_SCHEME

    if endpoint.startswith(UNIX_SCHEME):
        transport = httpx.HTTPTransport(uds=endpoint[len(UNIX_SCHEME) :])
        return httpx.Client(transport=transport, base_url="http://runtime")
    return httpx.Client(base_url=endpoint)


CALL_S = 0.05
# A python model that takes CALL_S a call.
SLEEPY_MODEL = f"""
import time

class Model:
    def load(self, model_dir):
        pass

    def predict(self, inputs):
        time.sleep({CALL_S})
        return inputs
"""


class Load:
    """``callers`` threads calling the service without pause until stopped."""

    def __init__(self, url: str, key: str, slug: str, callers: int):
        self.url, self.key, self.slug = url, key, slug
        self.ok, self.failed = 0, []
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(callers)]

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(f"/api/v1/services/{self.slug}/predict", json={"inputs": [1]})
                    failure = None if response.status_code == 200 else f"{response.status_code} {response.text[:200]}"
                except httpx.TransportError as error:
                    failure = repr(error)
                with self._lock:
                    if failure is None:
                        self.ok += 1
                    else:
                        self.failed.append(failure)

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


class Caller:
    """The test client (in this process) calling the service continuously from a thread,
    keeping (time sent, status, version): the gateway routes a call when it arrives, so its
    send time is what counts."""

    def __init__(self, api, slug: str = "m"):
        self.api, self.slug, self.calls, self.stop = api, slug, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            while not self.stop.is_set():
                sent = time.time()
                response = self.api.post(f"/api/v1/services/{self.slug}/predict", {"inputs": [1]}, format="json")
                self.calls.append((sent, response.status_code, response.get("X-Model-Version")))
        finally:
            connection.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=30)
