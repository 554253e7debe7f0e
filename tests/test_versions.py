"""Several versions in one service on real runtimes: the split, sticky keys, and taking a
version out without cutting a call."""

import threading
import time
from collections import Counter

import pytest
from django.db import connection

from conftest import make_zip, wait_for
from controlplane.backends import get_backend
from controlplane.models import Instance
from inference import metrics
from tests.support import ECHO_MODEL, assert_share, deploy, predict, upload, wait_status

pytestmark = pytest.mark.integration

ECHO_PACKAGE = make_zip(
    {"modelbay.yaml": "framework: python\nentrypoint: predictor:Model\n", "predictor.py": ECHO_MODEL, "prefix.txt": ">"}
)


@pytest.fixture
def two_versions(worker, api):
    upload(api, "echo", "echo.zip", ECHO_PACKAGE)
    assert api.post("/api/v1/models/echo/versions", {"file": _file()}, format="multipart").status_code == 201
    deploy(api, "echo", "echo", version=1)
    wait_status(api, "echo")
    assert api.post("/api/v1/services/echo/versions", {"version": 2}, format="json").status_code == 202

    def both_ready():
        body = api.get("/api/v1/services/echo").json()
        versions = {i["version"] for i in body["instances"] if i["status"] == "ready"}
        return body if versions == {1, 2} and body["status"] == "ready" else None

    return wait_for(both_ready, timeout_s=60, what="both versions ready")


def _file():
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("echo.zip", ECHO_PACKAGE)


def _version_of(response) -> int:
    assert response.status_code == 200, response.content
    return int(response["X-Model-Version"])


def test_calls_split_like_the_weights_and_route_keys_stick(two_versions, api):
    assert api.put("/api/v1/services/echo/traffic", {"weights": {"1": 70, "2": 30}}, format="json").status_code == 200
    # Weighted random per call: bounded at 4 sigma of the sample (±4.1 points over 2,000 calls).
    counts = Counter(_version_of(predict(api, "echo", ["x"])) for _ in range(2000))
    assert_share(counts[2], 2000, 0.30, what="version 2 at a weight of 30%")

    keyed = {}
    for n in range(60):
        versions = {_version_of(predict(api, "echo", ["x"], HTTP_X_ROUTE_KEY=f"user-{n}")) for _ in range(4)}
        assert len(versions) == 1, f"user-{n} reached {versions}"
        keyed[n] = versions.pop()
    assert set(keyed.values()) == {1, 2}  # keys are spread, each one sticks

    # Every call was counted for the version that answered it.
    metrics.flush()
    measured = {v["version"]: v for v in api.get("/api/v1/services/echo/metrics").json()["versions"]}
    keyed_counts = Counter(keyed.values())
    for version in (1, 2):
        assert measured[version]["requests"] == counts[version] + 4 * keyed_counts[version]
        assert measured[version]["errors"] == 0 and measured[version]["p99_ms"] > 0


def test_a_retired_version_finishes_its_calls_then_stops(two_versions, api):
    api.put("/api/v1/services/echo/traffic", {"weights": {"1": 100}}, format="json")
    old = set(Instance.objects.filter(deployment__model_version__version=1).values_list("id", flat=True))
    slow = {}

    def slow_call():
        try:
            slow["response"] = predict(api, "echo", ["slow"])  # 3 s inside the runtime
        finally:
            connection.close()

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.5)  # the slow call is in the runtime
    assert api.put("/api/v1/services/echo/traffic", {"weights": {"2": 100}}, format="json").status_code == 200
    assert api.delete("/api/v1/services/echo/versions/1").status_code == 202
    # New calls go to version 2 at once, and none fails.
    assert {_version_of(predict(api, "echo", ["x"])) for _ in range(50)} == {2}
    caller.join(timeout=30)
    assert slow["response"].status_code == 200, slow["response"].content
    assert slow["response"].json()["outputs"] == [">slow"] and slow["response"]["X-Model-Version"] == "1"

    wait_for(lambda: not (old & set(get_backend().list())), timeout_s=30, what="version 1's runtimes to stop")

    def version_1_forgotten():  # the pass forgets the version just after its runtimes stop
        body = wait_status(api, "echo")
        return body if {i["version"] for i in body["instances"]} == {2} else None

    body = wait_for(version_1_forgotten, timeout_s=30, what="version 1's instances to be forgotten")
    assert body["traffic"] == [{"version": 2, "weight": 100}]
    assert {i["version"] for i in body["instances"]} == {2}


def test_shadow_traffic_measures_a_version_without_answering_with_it(two_versions, api):
    body = {"weights": {"1": 100}, "shadow": {"2": 50}}
    assert api.put("/api/v1/services/echo/traffic", body, format="json").status_code == 200
    answers = Counter(_version_of(predict(api, "echo", ["x"])) for _ in range(400))
    assert answers == {1: 400}  # every answer comes from version 1

    def mirrored():
        metrics.flush()
        versions = {v["version"]: v for v in api.get("/api/v1/services/echo/metrics").json()["versions"]}
        return versions if versions[2]["requests"] >= 150 else None

    versions = wait_for(mirrored, timeout_s=20, what="the shadow copies to be counted")
    assert versions[1]["requests"] == 400
    assert versions[2]["requests"] <= 250 and versions[2]["errors"] == 0  # about half, as asked
