"""What the end-to-end tests share: API steps of a user, a bound for observed traffic
shares, and small python models."""

import math

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
