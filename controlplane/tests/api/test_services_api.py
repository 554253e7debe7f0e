import pytest

from controlplane.models import Deployment, Service

pytestmark = pytest.mark.django_db


def test_create_service_answers_202_provisioning_and_enqueues(api, digits, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = api.post("/api/v1/services", {"name": "digits", "model": "digits", "version": 1}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["slug"] == "digits"
    assert body["status"] == "provisioning"
    assert body["traffic"] == [{"version": 1, "weight": 100}]
    assert body["instances"] == []
    assert body["error"] is None
    assert len(callbacks) >= 1  # the provisioning task, enqueued after commit


def test_version_defaults_to_latest(api, digits):
    response = api.post("/api/v1/services", {"name": "s", "model": "digits"}, format="json")
    assert response.status_code == 202
    assert response.json()["traffic"][0]["version"] == 1


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"model": "digits"}, "name"),
        ({"name": "s"}, "model"),
        ({"name": "s", "model": "nope"}, "model"),
        ({"name": "s", "model": "digits", "version": 9}, "version"),
        ({"name": "s", "model": "digits", "replicas": 0}, "replicas"),
        ({"name": "s", "model": "digits", "replicas": 1000}, "replicas"),
        ({"name": "s", "model": "digits", "replicas": "many"}, "replicas"),
        ({"name": "---", "model": "digits"}, "name"),
    ],
)
def test_bad_service_requests_name_the_field(api, digits, payload, field):
    response = api.post("/api/v1/services", payload, format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid_request"
    assert field in body["fields"], body
    assert Service.objects.count() == 0


def test_malformed_json_answers_400(api):
    response = api.generic("POST", "/api/v1/services", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"


def test_service_slug_taken_answers_409(api, digits):
    api.post("/api/v1/services", {"name": "s", "model": "digits"}, format="json")
    response = api.post("/api/v1/services", {"name": "s", "model": "digits"}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"


def test_scale_answers_202(api, digits):
    api.post("/api/v1/services", {"name": "s", "model": "digits"}, format="json")
    response = api.patch("/api/v1/services/s", {"replicas": 3}, format="json")
    assert response.status_code == 202
    assert response.json()["replicas"]["desired"] == 3
    assert api.patch("/api/v1/services/s", {"replicas": -1}, format="json").status_code == 400


def test_delete_service_answers_202_and_hides_it(api, digits):
    api.post("/api/v1/services", {"name": "s", "model": "digits"}, format="json")
    assert api.delete("/api/v1/services/s").status_code == 202
    assert api.get("/api/v1/services/s").status_code == 404
    assert "s" not in [s["slug"] for s in api.get("/api/v1/services").json()]
    # The slug is free again at once.
    assert api.post("/api/v1/services", {"name": "s", "model": "digits"}, format="json").status_code == 202


def test_deleting_a_deployed_model_answers_409(api, digits):
    api.post("/api/v1/services", {"name": "s", "model": "digits"}, format="json")
    response = api.delete("/api/v1/models/digits")
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"
    assert api.get("/api/v1/models/digits").status_code == 200
    assert Deployment.objects.count() == 1
