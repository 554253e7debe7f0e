"""Versions in a service and the traffic split: what the API accepts and refuses."""

import pytest

from controlplane.choices import InstanceStatus
from controlplane.models import Deployment, Instance

pytestmark = pytest.mark.django_db


@pytest.fixture
def service(api, digits_upload, digits_model):
    from django.core.files.uploadedfile import SimpleUploadedFile

    assert api.post("/api/v1/models", {"name": "digits", "file": digits_upload}, format="multipart").status_code == 201
    again = SimpleUploadedFile("digits.onnx", digits_model[0].read_bytes())
    assert api.post("/api/v1/models/digits/versions", {"file": again}, format="multipart").status_code == 201
    response = api.post("/api/v1/services", {"name": "s", "model": "digits", "version": 1}, format="json")
    assert response.status_code == 202
    return response.json()


def _ready(version: int) -> None:
    deployment = Deployment.objects.get(model_version__version=version)
    Instance.objects.create(deployment=deployment, zone="zone-a", status=InstanceStatus.READY, endpoint="http://x")


def _weights() -> dict[int, int]:
    return dict(Deployment.objects.values_list("model_version__version", "weight"))


def test_a_second_version_comes_up_without_traffic(api, service, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = api.post("/api/v1/services/s/versions", {"version": 2}, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["traffic"] == [{"version": 1, "weight": 100}, {"version": 2, "weight": 0}]
    assert callbacks  # the worker is asked to bring it up


@pytest.mark.parametrize(
    "payload, status, code",
    [({"version": 9}, 400, "invalid_request"), ({"version": 1}, 409, "conflict"), ({}, 400, "invalid_request")],
)
def test_deploying_a_version_refused(api, service, payload, status, code):
    response = api.post("/api/v1/services/s/versions", payload, format="json")
    assert (response.status_code, response.json()["code"]) == (status, code)
    assert _weights() == {1: 100}


def test_split_between_ready_versions(api, service):
    api.post("/api/v1/services/s/versions", {"version": 2}, format="json")
    _ready(1)
    _ready(2)
    response = api.put("/api/v1/services/s/traffic", {"weights": {"1": 70, "2": 30}}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["traffic"] == [{"version": 1, "weight": 70}, {"version": 2, "weight": 30}]
    # A version left out gets 0.
    assert api.put("/api/v1/services/s/traffic", {"weights": {"2": 100}}, format="json").status_code == 200
    assert _weights() == {1: 0, 2: 100}


@pytest.mark.parametrize(
    "weights, field, words",
    [
        ({"1": 70, "2": 20}, "weights", "sum to 90"),
        ({"1": 70, "3": 30}, "weights.3", "does not run"),
        ({"1": 50, "2": 50}, "weights.2", "no ready instance"),
        ({"1": 101, "2": -1}, "weights", ""),
        ({"one": 100}, "weights", "by number"),
        ({"1": 99.5, "2": 0.5}, "weights", ""),
    ],
)
def test_bad_splits_answer_400_naming_the_field_and_change_nothing(api, service, weights, field, words):
    api.post("/api/v1/services/s/versions", {"version": 2}, format="json")
    _ready(1)
    response = api.put("/api/v1/services/s/traffic", {"weights": weights}, format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid_request"
    assert (
        any(name == field or name.startswith(field + ".") for name in body.get("fields", {}))
        or body.get("field") == field
    ), body
    assert words in body["detail"] or words in str(body.get("fields"))
    assert _weights() == {1: 100, 2: 0}


def test_retiring_a_version(api, service):
    api.post("/api/v1/services/s/versions", {"version": 2}, format="json")
    _ready(1)
    _ready(2)
    response = api.delete("/api/v1/services/s/versions/1")
    assert (response.status_code, response.json()["code"]) == (409, "conflict")  # it still takes the calls
    api.put("/api/v1/services/s/traffic", {"weights": {"2": 100}}, format="json")
    assert api.delete("/api/v1/services/s/versions/1").status_code == 202
    assert api.get("/api/v1/services/s").json()["traffic"] == [{"version": 2, "weight": 100}]
    assert api.delete("/api/v1/services/s/versions/1").status_code == 404  # already going
    assert api.post("/api/v1/services/s/versions", {"version": 1}, format="json").status_code == 409  # draining
    response = api.delete("/api/v1/services/s/versions/2")
    assert (response.status_code, response.json()["code"]) == (409, "conflict")  # the last version


def test_another_tenant_cannot_touch_versions_or_traffic(api, service, outsider_api):
    assert outsider_api.post("/api/v1/services/s/versions", {"version": 2}, format="json").status_code == 404
    assert outsider_api.put("/api/v1/services/s/traffic", {"weights": {"1": 100}}, format="json").status_code == 404
    assert outsider_api.delete("/api/v1/services/s/versions/1").status_code == 404
    assert _weights() == {1: 100}


def test_predict_only_keys_cannot_change_traffic(service, predict_only_api):
    response = predict_only_api.put("/api/v1/services/s/traffic", {"weights": {"1": 100}}, format="json")
    assert response.status_code == 403
