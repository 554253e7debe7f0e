"""Gray releases on real runtimes with a real worker and beat: a client keeps calling
through a whole rollout and through a rollback without one failed call, and a bad
version is rolled back by the analysis alone."""

import threading
import time
from collections import Counter
from datetime import datetime

import pytest
from django.db import connection

from conftest import make_zip, python_package, wait_for
from tests.support import assert_share, deploy, upload, wait_status

pytestmark = pytest.mark.integration

VERSIONED_MODEL = """
class Model:
    def load(self, model_dir):
        self.version = open(model_dir + "/version.txt").read().strip()

    def predict(self, inputs):
        return [self.version for _ in inputs]
"""

FAILING_SOMETIMES = """
class Model:
    def load(self, model_dir):
        self.calls = 0

    def predict(self, inputs):
        self.calls += 1
        if self.calls % 4 == 0:
            raise RuntimeError("version 3 cannot handle this input")
        return ["v3" for _ in inputs]
"""


def _package(version: str) -> bytes:
    manifest = "framework: python\nentrypoint: predictor:Model\n"
    return make_zip({"modelbay.yaml": manifest, "predictor.py": VERSIONED_MODEL, "version.txt": version})


def _add_version(api, content: bytes) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = api.post("/api/v1/models/m/versions", {"file": SimpleUploadedFile("m.zip", content)}, format="multipart")
    assert response.status_code == 201, response.content


class Caller:
    """A client calling the service continuously from a thread, keeping (time sent, status,
    version): the gateway routes a call when it arrives, so its send time is what counts."""

    def __init__(self, api):
        self.api, self.calls, self.stop = api, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            while not self.stop.is_set():
                sent = time.time()
                response = self.api.post("/api/v1/services/m/predict", {"inputs": [1]}, format="json")
                self.calls.append((sent, response.status_code, response.get("X-Model-Version")))
        finally:
            connection.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=30)


@pytest.fixture(params=["local", pytest.param("docker", marks=pytest.mark.docker)])
def backend_worker(request, transactional_db):
    """The real worker on either backend (the Docker tests' engine and image included)."""
    return request.getfixturevalue("worker" if request.param == "local" else "docker_worker")


@pytest.fixture
def service(backend_worker, api):
    upload(api, "m", "m.zip", _package("v1"))
    _add_version(api, _package("v2"))
    deploy(api, "m", "m", version=1, replicas=2)
    wait_status(api, "m")
    return "m"


def _wait_release_of(api, slug: str, release_id: int, statuses: tuple[str, ...], timeout_s: float = 120) -> dict:
    def done():
        body = api.get(f"/api/v1/services/{slug}/releases/{release_id}").json()
        return body if body["status"] in statuses else None

    return wait_for(done, timeout_s=timeout_s, what=f"release {release_id} to be {'/'.join(statuses)}")


def _wait_release(api, release_id: int, statuses: tuple[str, ...], timeout_s: float = 120) -> dict:
    return _wait_release_of(api, "m", release_id, statuses, timeout_s)


def test_a_full_rollout_fails_no_call_and_splits_like_each_step(service, api):
    with Caller(api) as caller:
        body = api.post(
            "/api/v1/services/m/releases", {"version": 2, "steps": [10, 50, 100], "interval_s": 5}, format="json"
        ).json()
        release = _wait_release(api, body["id"], ("promoted", "rolled_back", "failed"))
        time.sleep(1)
    assert release["status"] == "promoted", release["reason"]
    statuses = Counter(status for _, status, _ in caller.calls)
    assert statuses == {200: len(caller.calls)}, statuses

    # At each step the observed share of version 2 is its weight, within 4 standard
    # deviations of a weighted-random split over that step's calls (about 1,000 to 2,000:
    # ±3.8 points at 10 %, ±6.3 at 50 % over 1,000).
    steps = [e for e in release["history"] if e["action"] in ("step", "promoted")]
    for step, following in zip(steps, steps[1:]):
        begin = datetime.fromisoformat(step["at"]).timestamp() + 0.2  # every gateway has the new table
        end = datetime.fromisoformat(following["at"]).timestamp()
        versions = [v for t, _, v in caller.calls if begin <= t < end]
        assert len(versions) >= 1000, f"only {len(versions)} calls at {step['weight']}%"
        assert_share(versions.count("2"), len(versions), step["weight"] / 100,
                     what=f"version 2 at a weight of {step['weight']}%")  # fmt: skip
    final = [v for t, _, v in caller.calls if t > datetime.fromisoformat(steps[-1]["at"]).timestamp() + 0.2]
    assert set(final) == {"2"}

    body = wait_status(api, "m")
    assert body["traffic"] == [{"version": 2, "weight": 100}]
    wait_for(lambda: {i["version"] for i in api.get("/api/v1/services/m").json()["instances"]} == {2},
             timeout_s=30, what="version 1's instances to go")  # fmt: skip


def test_an_operator_rollback_fails_no_call(service, api):
    with Caller(api) as caller:
        body = api.post(
            "/api/v1/services/m/releases", {"version": 2, "steps": [50, 100], "interval_s": 600}, format="json"
        ).json()
        _wait_release(api, body["id"], ("rolling",))
        time.sleep(1)
        assert api.post(f"/api/v1/services/m/releases/{body['id']}/rollback").status_code == 200
        time.sleep(3)  # the new version drains and stops meanwhile
    assert Counter(s for _, s, _ in caller.calls) == {200: len(caller.calls)}
    assert {v for _, _, v in caller.calls} == {"1", "2"}
    assert wait_status(api, "m")["traffic"] == [{"version": 1, "weight": 100}]


def _release_of_a_new_version(api, predictor_source: str, settings: dict) -> dict:
    """Upload ``predictor_source`` as version 3, release it while a client calls, and
    return the release once it has ended."""
    _add_version(api, python_package(predictor_source))
    with Caller(api):
        body = api.post("/api/v1/services/m/releases", {"version": 3, **settings}, format="json").json()
        return _wait_release(api, body["id"], ("promoted", "rolled_back", "failed"))


def test_a_version_that_fails_calls_is_rolled_back_by_itself(service, api):
    release = _release_of_a_new_version(
        api, FAILING_SOMETIMES, {"steps": [20, 100], "interval_s": 3, "max_error_rate": 0.05}
    )
    assert release["status"] == "rolled_back"
    assert "error rate" in release["reason"] and "max_error_rate 5.00%" in release["reason"]
    assert release["history"][-1]["figures"]["new"]["errors"] > 0
    assert wait_status(api, "m")["traffic"] == [{"version": 1, "weight": 100}]


def test_a_release_continues_across_a_worker_restart(service, api, backend_worker):
    worker = backend_worker
    body = api.post(
        "/api/v1/services/m/releases", {"version": 2, "steps": [10, 50, 100], "interval_s": 3}, format="json"
    ).json()
    _wait_release(api, body["id"], ("rolling",))
    worker.stop()
    time.sleep(4)  # a step falls due while no worker runs
    assert api.get(f"/api/v1/services/m/releases/{body['id']}").json()["weights"]["2"] == 10
    worker.ensure(worker.backend, **worker.extra_env)
    release = _wait_release(api, body["id"], ("promoted",))
    assert [e["weight"] for e in release["history"] if e["action"] == "step"] == [10, 50]


SLOW_MODEL = """
import time

class Model:
    def load(self, model_dir):
        pass

    def predict(self, inputs):
        time.sleep(0.3)
        return ["slow" for _ in inputs]
"""


@pytest.mark.parametrize("backend_worker", ["local"], indirect=True)
def test_a_slow_version_is_rolled_back_by_itself(service, api):
    release = _release_of_a_new_version(api, SLOW_MODEL, {"steps": [50, 100], "interval_s": 3, "max_p99_ms": 100})
    assert release["status"] == "rolled_back"
    assert "p99 latency" in release["reason"] and "max_p99_ms 100 ms" in release["reason"]
    assert release["history"][-1]["figures"]["new"]["p99_ms"] > 100


@pytest.mark.parametrize("backend_worker", ["local"], indirect=True)
def test_promote_drains_the_old_version_without_cutting_a_call(backend_worker, api):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from inference.routing import Route, Target, VersionRoute

    upload(api, "p", "slow.zip", python_package(SLOW_MODEL))  # version 1: 0.3 s a call
    fast = SimpleUploadedFile("fast.zip", _package("v2"))
    assert api.post("/api/v1/models/p/versions", {"file": fast}, format="multipart").status_code == 201
    deploy(api, "p", "p", version=1)
    wait_status(api, "p")
    body = api.post(
        "/api/v1/services/p/releases", {"version": 2, "steps": [50, 100], "interval_s": 600}, format="json"
    ).json()
    _wait_release_of(api, "p", body["id"], ("rolling",))
    # A route key that lands on the old, slow version while the split is 50/50.
    target = (Target("i", "http://x", "zone-a"),)
    split = Route(0, 0, "p", (VersionRoute(1, 50, target), VersionRoute(2, 50, target)))
    key = next(k for k in (f"user-{n}" for n in range(100)) if split.pick_version(route_key=k).version == 1)
    answers = []

    def calls():
        try:
            for _ in range(15):
                response = api.post("/api/v1/services/p/predict", {"inputs": [1]}, format="json", HTTP_X_ROUTE_KEY=key)
                answers.append((response.status_code, response.get("X-Model-Version")))
        finally:
            connection.close()

    caller = threading.Thread(target=calls)
    caller.start()
    time.sleep(1)  # a call to version 1 is in flight
    assert api.post(f"/api/v1/services/p/releases/{body['id']}/promote").status_code == 200
    caller.join(timeout=60)
    assert {status for status, _ in answers} == {200}, answers
    assert (200, "1") in answers and answers[-1] == (200, "2")  # in flight on 1 when it went, then 2
