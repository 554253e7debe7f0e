"""Gray releases: starting one, the steps beat takes, the analysis, and the actions.

Beat's tick is called directly here (``releases.advance``), with instances and call
metrics written as the worker and the gateway would; tests/test_releases.py runs the
whole thing on real runtimes.
"""

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from controlplane import releases
from controlplane.choices import InstanceStatus
from controlplane.models import Deployment, Instance, Release, VersionMetrics

pytestmark = pytest.mark.django_db


@pytest.fixture
def service(api, digits_model):
    content = digits_model[0].read_bytes()
    api.post("/api/v1/models", {"name": "digits", "file": SimpleUploadedFile("d.onnx", content)}, format="multipart")
    for _ in range(2):
        api.post("/api/v1/models/digits/versions", {"file": SimpleUploadedFile("d.onnx", content)}, format="multipart")
    assert (
        api.post("/api/v1/services", {"name": "s", "model": "digits", "version": 1}, format="json").status_code == 202
    )
    _ready(1)
    return "s"


def _ready(version: int, count: int = 1) -> None:
    deployment = Deployment.objects.get(model_version__version=version, retired_at__isnull=True)
    for _ in range(count):
        Instance.objects.create(deployment=deployment, zone="zone-a", status=InstanceStatus.READY, endpoint="http://x")


def _weights() -> dict[int, int]:
    return dict(Deployment.objects.filter(retired_at__isnull=True).values_list("model_version__version", "weight"))


def _start(api, **body) -> dict:
    response = api.post("/api/v1/services/s/releases", {"version": 2, "interval_s": 60, **body}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _tick(release_id: int, *, interval_passed: bool = True) -> Release:
    if interval_passed:
        Release.objects.filter(pk=release_id).update(step_started_at=timezone.now() - timedelta(seconds=61))
    releases.advance(release_id)
    return Release.objects.get(pk=release_id)


def _calls(version: int, requests: int, errors: int = 0, bucket: str = "le_5ms") -> None:
    start = timezone.now() - timedelta(seconds=30)
    start -= timedelta(seconds=start.timestamp() % 10)
    VersionMetrics.objects.create(service_id=Deployment.objects.first().service_id, version=version, start=start,
                                  requests=requests, errors=errors, **{bucket: requests})  # fmt: skip


def test_a_release_starts_the_new_version_beside_the_old(api, service):
    body = _start(api, steps=[10, 50, 100])
    assert (body["version"], body["from_version"], body["status"], body["step"]) == (2, 1, "starting", -1)
    assert body["weights"] == {"1": 100, "2": 0}
    assert _weights() == {1: 100, 2: 0}
    assert body["history"][0]["action"] == "started"
    # Not ready yet: no step.
    assert _tick(body["id"]).status == "starting"


def test_steps_move_the_weight_while_the_new_version_is_well(api, service):
    release_id = _start(api, steps=[10, 50, 100])["id"]
    _ready(2)
    release = _tick(release_id, interval_passed=False)
    assert (release.status, release.weight, _weights()) == ("rolling", 10, {1: 90, 2: 10})
    assert _tick(release_id, interval_passed=False).weight == 10  # the interval has not passed
    _calls(1, 900)
    _calls(2, 100, errors=1)
    release = _tick(release_id)
    assert (release.weight, _weights()) == (50, {1: 50, 2: 50})
    figures = release.history[-1]["figures"]
    assert figures["new"]["requests"] == 100 and figures["new"]["error_rate"] == 0.01
    assert figures["old"]["requests"] == 900
    release = _tick(release_id)
    assert (release.status, release.weight) == ("promoted", 100)
    assert _weights() == {2: 100}  # version 1 is taken out
    assert Deployment.objects.get(model_version__version=1).retired_at is not None
    assert [entry["action"] for entry in release.history] == ["started", "step", "step", "promoted"]


def test_an_error_rate_over_the_bound_rolls_back_by_itself(api, service):
    release_id = _start(api, steps=[10, 50, 100], max_error_rate=0.05)["id"]
    _ready(2)
    _tick(release_id, interval_passed=False)
    _calls(1, 900, errors=2)
    _calls(2, 100, errors=12)
    release = _tick(release_id)
    assert release.status == "rolled_back"
    assert "error rate 12.00% over 100 calls exceeds max_error_rate 5.00%" in release.reason
    assert release.history[-1]["figures"]["new"]["errors"] == 12
    assert _weights() == {1: 100}
    assert Deployment.objects.get(model_version__version=2).retired_at is not None


def test_a_slow_new_version_rolls_back_by_itself(api, service):
    release_id = _start(api, steps=[20, 100], max_p99_ms=100)["id"]
    _ready(2)
    _tick(release_id, interval_passed=False)
    _calls(1, 500, bucket="le_10ms")
    _calls(2, 100, bucket="le_500ms")
    release = _tick(release_id)
    assert release.status == "rolled_back" and "p99 latency" in release.reason and "max_p99_ms 100" in release.reason


def test_a_new_version_that_cannot_start_fails_the_release(api, service):
    release_id = _start(api)["id"]
    deployment = Deployment.objects.get(model_version__version=2)
    Instance.objects.create(deployment=deployment, zone="zone-a", status=InstanceStatus.FAILED, error="boom")
    release = _tick(release_id)
    assert release.status == "failed" and "boom" in release.reason
    assert _weights() == {1: 100}


def test_operator_actions(api, service):
    release_id = _start(api, steps=[10, 50, 100])["id"]
    _ready(2)
    _tick(release_id, interval_passed=False)
    url = f"/api/v1/services/s/releases/{release_id}"
    assert api.post(f"{url}/pause").json()["status"] == "paused"
    assert _tick(release_id).weight == 10  # paused: beat leaves it
    assert api.post(f"{url}/pause").status_code == 409
    assert api.post(f"{url}/resume").json()["status"] == "rolling"
    body = api.post(f"{url}/promote").json()
    assert (body["status"], body["weights"]) == ("promoted", {"1": 0, "2": 100})
    assert _weights() == {2: 100}
    assert api.post(f"{url}/rollback").status_code == 409  # over
    assert api.post(f"{url}/nonsense").status_code == 404


def test_operator_rollback(api, service):
    release_id = _start(api)["id"]
    _ready(2)
    _tick(release_id, interval_passed=False)
    body = api.post(f"/api/v1/services/s/releases/{release_id}/rollback").json()
    assert (body["status"], body["reason"]) == ("rolled_back", "Rolled back by the operator.")
    assert _weights() == {1: 100}


def test_one_release_at_a_time_and_no_manual_split_meanwhile(api, service):
    _start(api)
    response = api.post("/api/v1/services/s/releases", {"version": 3}, format="json")
    assert (response.status_code, response.json()["code"]) == (409, "conflict")
    _ready(2)
    response = api.put("/api/v1/services/s/traffic", {"weights": {"1": 50, "2": 50}}, format="json")
    assert response.status_code == 409


@pytest.mark.parametrize(
    "body, field",
    [
        ({"version": 1}, "version"),
        ({"version": 9}, "version"),
        ({"version": 2, "steps": [50, 10, 100]}, "steps"),
        ({"version": 2, "steps": [10, 50]}, "steps"),
        ({"version": 2, "steps": []}, "steps"),
        ({"version": 2, "interval_s": 0}, "interval_s"),
        ({"version": 2, "max_error_rate": 2}, "max_error_rate"),
    ],
)
def test_bad_releases_answer_400_naming_the_field(api, service, body, field):
    response = api.post("/api/v1/services/s/releases", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json().get("fields", {}) or response.json().get("field") == field, response.json()
    assert not Release.objects.exists() and _weights() == {1: 100}


def test_releases_are_listed_and_kept_to_their_tenant(api, service, outsider_api):
    release_id = _start(api)["id"]
    listed = api.get("/api/v1/services/s/releases").json()
    assert [r["id"] for r in listed] == [release_id]
    assert api.get(f"/api/v1/services/s/releases/{release_id}").json()["history"]
    assert outsider_api.get("/api/v1/services/s/releases").status_code == 404
    assert outsider_api.get(f"/api/v1/services/s/releases/{release_id}").status_code == 404
    assert outsider_api.post(f"/api/v1/services/s/releases/{release_id}/promote").status_code == 404
    assert outsider_api.post("/api/v1/services/s/releases", {"version": 2}, format="json").status_code == 404


def test_a_shadow_phase_measures_the_new_version_before_it_takes_calls(api, service):
    release_id = _start(api, steps=[10, 100], shadow_percent=30)["id"]
    _ready(2)
    release = _tick(release_id, interval_passed=False)
    assert (release.status, release.weight, _weights()) == ("rolling", 0, {1: 100, 2: 0})
    assert release.history[-1]["action"] == "shadow"
    assert Deployment.objects.get(model_version__version=2).shadow_percent == 30
    _calls(1, 1000)
    _calls(2, 300)  # the mirrored copies
    release = _tick(release_id)
    assert (release.weight, _weights()) == (10, {1: 90, 2: 10})
    assert release.history[-1]["figures"]["new"]["requests"] == 300
    assert Deployment.objects.get(model_version__version=2).shadow_percent == 0  # no more copies


def test_a_bad_version_is_rolled_back_on_its_shadow_calls_alone(api, service):
    release_id = _start(api, steps=[10, 100], shadow_percent=50)["id"]
    _ready(2)
    _tick(release_id, interval_passed=False)
    _calls(2, 200, errors=50)
    release = _tick(release_id)
    assert release.status == "rolled_back" and "error rate 25.00%" in release.reason
    assert _weights() == {1: 100}  # it never answered a call


def test_shadow_traffic_set_by_hand(api, service):
    api.post("/api/v1/services/s/versions", {"version": 2}, format="json")
    response = api.put("/api/v1/services/s/traffic", {"weights": {"1": 100}, "shadow": {"2": 20}}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["shadow"] == {"2": 20}
    bad = api.put("/api/v1/services/s/traffic", {"weights": {"1": 100}, "shadow": {"1": 20}}, format="json")
    assert bad.status_code == 400 and "shadow.1" in bad.json()["fields"]  # 1 takes the calls already
    # Left out, the shadow stays; given empty, it goes.
    assert api.put("/api/v1/services/s/traffic", {"weights": {"1": 100}}, format="json").json()["shadow"] == {"2": 20}
    body = api.put("/api/v1/services/s/traffic", {"weights": {"1": 100}, "shadow": {}}, format="json").json()
    assert body["shadow"] == {}
