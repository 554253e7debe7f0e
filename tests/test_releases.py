"""Gray releases on real runtimes with a real worker and beat: a client keeps calling
through a whole rollout and through a rollback without one failed call, a bad version
(or one worse than the version it replaces) is rolled back by the analysis alone, and a
release without calls is never promoted by it."""

import threading
import time
from collections import Counter
from datetime import datetime

import pytest
from django.db import connection

from conftest import make_zip, python_package, wait_for
from controlplane import releases
from tests.support import Caller, assert_share, deploy, upload, wait_status

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


@pytest.fixture(autouse=True)
def short_steps(settings):
    """Steps of a few seconds: shorter than a release may have outside the tests (they are
    started in this process, through the test client)."""
    settings.MODELBAY_RELEASE_MIN_INTERVAL_S = 1


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
            "/api/v1/services/m/releases", {"version": 2, "steps": [10, 50, 100], "interval_s": 10}, format="json"
        ).json()
        release = _wait_release(api, body["id"], ("promoted", "rolled_back", "failed"))
        time.sleep(1)
    assert release["status"] == "promoted", release["reason"]
    statuses = Counter(status for _, status, _ in caller.calls)
    assert statuses == {200: len(caller.calls)}, statuses

    # At each step the observed share of version 2 is its weight, within 4 standard
    # deviations of a weighted-random split over that step's calls (10 s of them, at least
    # 1,000 even on a busy machine: ±3.8 points at 10 %, ±6.3 at 50 % over 1,000).
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
        "/api/v1/services/m/releases",
        {"version": 2, "steps": [10, 50, 100], "interval_s": 3, "min_calls": 20},
        format="json",
    ).json()
    with Caller(api):  # calls to judge each step on
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
    release = _release_of_a_new_version(
        api, SLOW_MODEL, {"steps": [50, 100], "interval_s": 3, "max_p99_ms": 100, "min_calls": 10}
    )
    assert release["status"] == "rolled_back"
    assert "p99 latency" in release["reason"] and "max_p99_ms 100 ms" in release["reason"]
    assert release["history"][-1]["figures"]["new"]["p99_ms"] > 100


@pytest.mark.parametrize("backend_worker", ["local"], indirect=True)
def test_a_version_failing_more_calls_than_the_old_one_is_rolled_back_under_the_ceiling(service, api):
    # One call in 4 fails: under a ceiling of 50 %, and beyond chance over version 1's none
    # on 100 calls or more (the bound is then 15 % at most).
    release = _release_of_a_new_version(
        api, FAILING_SOMETIMES, {"steps": [50, 100], "interval_s": 3, "max_error_rate": 0.5}
    )
    assert release["status"] == "rolled_back", release["reason"]
    assert "is worse than version 1's 0.00%" in release["reason"]
    assert "max_error_rate_increase 1.00%" in release["reason"]
    figures = release["history"][-1]["figures"]
    assert figures["old"]["errors"] == 0 and figures["new"]["error_rate"] > figures["limits"]["error_rate"]
    assert figures["limits"]["error_rate"] < 0.5 and figures["new"]["requests"] >= 100
    assert wait_status(api, "m")["traffic"] == [{"version": 1, "weight": 100}]


@pytest.mark.parametrize("backend_worker", ["local"], indirect=True)
def test_a_version_slower_than_the_old_one_is_rolled_back_under_the_ceiling(service, api):
    release = _release_of_a_new_version(
        api, SLOW_MODEL, {"steps": [50, 100], "interval_s": 3, "max_p99_ms": 5000, "min_calls": 10}
    )
    assert release["status"] == "rolled_back", release["reason"]
    assert "max_p99_ratio 1.5 times version 1's" in release["reason"]
    figures = release["history"][-1]["figures"]
    assert figures["limits"]["p99_ms"] < 300 < figures["new"]["p99_ms"] < 5000


@pytest.mark.parametrize("backend_worker", ["local"], indirect=True)
def test_a_release_without_calls_is_never_promoted_by_the_analysis(service, api):
    body = api.post(
        "/api/v1/services/m/releases", {"version": 2, "steps": [50, 100], "interval_s": 1}, format="json"
    ).json()
    release = _wait_release(api, body["id"], ("paused", "promoted", "rolled_back", "failed"), timeout_s=180)

    assert release["status"] == "paused"
    assert release["reason"].startswith("Paused: not enough traffic to judge: 0 calls on version 2 and 0 on version 1")
    waits = [entry for entry in release["history"] if entry["action"] == "waiting"]
    assert len(waits) == releases.MAX_WAITS
    assert all(entry["message"].startswith("Not enough traffic to judge") for entry in waits)
    assert all(entry["figures"]["new"]["requests"] == 0 for entry in waits)
    assert "promoted" not in {entry["action"] for entry in release["history"]}
    assert release["weights"] == {"1": 50, "2": 50}  # where it waited: the operator decides
    assert sorted((t["version"], t["weight"]) for t in wait_status(api, "m")["traffic"]) == [(1, 50), (2, 50)]


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
