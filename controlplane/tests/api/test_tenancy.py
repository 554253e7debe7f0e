"""One tenant can neither see nor touch another's objects: every endpoint answers 404."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from controlplane.models import Model, Service

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme_objects(api, digits_upload):
    assert api.post("/api/v1/models", {"name": "digits", "file": digits_upload}, format="multipart").status_code == 201
    assert api.post("/api/v1/services", {"name": "digits", "model": "digits"}, format="json").status_code == 202


def _file(digits_model):
    return SimpleUploadedFile("d.onnx", digits_model[0].read_bytes())


FOREIGN_CALLS = [
    ("get", "/api/v1/models/digits", None),
    ("delete", "/api/v1/models/digits", None),
    ("get", "/api/v1/services/digits", None),
    ("patch", "/api/v1/services/digits", {"replicas": 2}),
    ("delete", "/api/v1/services/digits", None),
    ("post", "/api/v1/services/digits/predict", {"inputs": [[0] * 64]}),
    ("get", "/v2/models/digits", None),
    ("get", "/v2/models/digits/ready", None),
    ("post", "/v2/models/digits/infer", {"inputs": []}),
]


@pytest.mark.parametrize("method, path, payload", FOREIGN_CALLS, ids=[f"{m} {p}" for m, p, _ in FOREIGN_CALLS])
def test_foreign_objects_answer_404(acme_objects, outsider_api, method, path, payload):
    response = getattr(outsider_api, method)(path, payload, format="json")
    assert response.status_code == 404, response.content
    assert response.json()["code"] == "not_found"
    assert Model.objects.filter(slug="digits").count() == 1
    service = Service.objects.get(slug="digits")
    assert service.replicas == 1 and service.deleted_at is None


def test_foreign_version_upload_answers_404(acme_objects, outsider_api, digits_model):
    response = outsider_api.post("/api/v1/models/digits/versions", {"file": _file(digits_model)}, format="multipart")
    assert response.status_code == 404
    assert Model.objects.get(slug="digits").versions.count() == 1


def test_lists_show_only_own_objects(acme_objects, outsider_api):
    assert outsider_api.get("/api/v1/models").json() == []
    assert outsider_api.get("/api/v1/services").json() == []


def test_deploying_a_foreign_model_is_refused(acme_objects, outsider_api):
    response = outsider_api.post("/api/v1/services", {"name": "steal", "model": "digits"}, format="json")
    assert response.status_code == 400
    assert "model" in response.json()["fields"]


def test_same_slugs_in_two_tenants_do_not_collide(acme_objects, outsider_api, digits_model):
    response = outsider_api.post("/api/v1/models", {"name": "digits", "file": _file(digits_model)}, format="multipart")
    assert response.status_code == 201
    assert Model.objects.filter(slug="digits").count() == 2
