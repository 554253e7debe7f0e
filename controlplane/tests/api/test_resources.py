"""Per-instance resources of a service: asked for on POST and PATCH, answered as effective values."""

import pytest

from controlplane import resources
from controlplane.models import Service

pytestmark = pytest.mark.django_db

DEFAULTS = {"cpu": 1.0, "memory_mb": 1024}


@pytest.fixture
def service(api, digits):
    """A service that asked for 2 CPUs and 2048 MB per instance."""
    body = {"name": "s", "model": "digits", "resources": {"cpu": 2, "memory_mb": 2048}}
    response = api.post("/api/v1/services", body, format="json")
    assert response.status_code == 202, response.content
    return Service.objects.get(slug="s")


def _stored(slug="s") -> dict:
    return Service.objects.get(slug=slug, deleted_at__isnull=True).resources


# --- create --------------------------------------------------------------------------------
def test_create_with_resources_stores_the_request_and_answers_the_effective_values(api, digits):
    response = api.post("/api/v1/services", {"name": "s", "model": "digits", "resources": {"cpu": 0.5}}, format="json")

    assert response.status_code == 202, response.content
    assert response.json()["resources"] == {"cpu": 0.5, "memory_mb": 1024}
    assert _stored() == {"cpu": 0.5}


def test_create_without_resources_answers_the_defaults(api, digits):
    response = api.post("/api/v1/services", {"name": "s", "model": "digits"}, format="json")

    assert response.json()["resources"] == DEFAULTS
    assert _stored() == {}
    assert api.get("/api/v1/services/s").json()["resources"] == DEFAULTS


def test_defaults_follow_the_settings(api, digits, settings):
    api.post("/api/v1/services", {"name": "s", "model": "digits", "resources": {"cpu": 2}}, format="json")
    settings.MODELBAY_DEFAULT_MEMORY_MB = 512

    assert api.get("/api/v1/services/s").json()["resources"] == {"cpu": 2.0, "memory_mb": 512}
    assert api.get("/api/v1/services").json()[0]["resources"] == {"cpu": 2.0, "memory_mb": 512}


def test_the_maximum_itself_is_allowed(api, digits, settings):
    body = {"cpu": settings.MODELBAY_MAX_CPU, "memory_mb": settings.MODELBAY_MAX_MEMORY_MB}

    response = api.post("/api/v1/services", {"name": "s", "model": "digits", "resources": body}, format="json")

    assert response.status_code == 202, response.content
    assert response.json()["resources"] == body


BAD_RESOURCES = [
    ({"cpu": 0}, "resources.cpu", "between"),
    ({"cpu": -1}, "resources.cpu", "between"),
    ({"cpu": 0.05}, "resources.cpu", "between"),
    ({"cpu": 4.5}, "resources.cpu", "between"),
    ({"memory_mb": 0}, "resources.memory_mb", "between"),
    ({"memory_mb": -512}, "resources.memory_mb", "between"),
    ({"memory_mb": 9000}, "resources.memory_mb", "between"),
    ({"cpu": "two"}, "resources.cpu", "number"),
    ({"cpu": True}, "resources.cpu", "number"),
    ({"memory_mb": 512.5}, "resources.memory_mb", "integer"),
    ({"memory_mb": "lots"}, "resources.memory_mb", "integer"),
    ({"gpu": 1}, "resources.gpu", "Unknown resource"),
]


def _assert_names_the_field(response, field, reason):
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid_request"
    assert field in body["fields"], body
    assert reason in body["fields"][field][0]
    assert field in body["detail"] and reason in body["detail"]


@pytest.mark.parametrize("requested, field, reason", BAD_RESOURCES)
def test_bad_resources_on_create_answer_400_naming_the_field(api, digits, requested, field, reason):
    response = api.post("/api/v1/services", {"name": "s", "model": "digits", "resources": requested}, format="json")

    _assert_names_the_field(response, field, reason)
    assert not Service.objects.exists()


def test_resources_must_be_an_object(api, digits):
    response = api.post("/api/v1/services", {"name": "s", "model": "digits", "resources": [1, 2]}, format="json")

    assert response.status_code == 400
    assert "resources" in response.json()["fields"]
    assert not Service.objects.exists()


def test_the_maximum_is_read_when_the_request_comes(api, digits, settings):
    settings.MODELBAY_MAX_CPU = 1.0

    response = api.post("/api/v1/services", {"name": "s", "model": "digits", "resources": {"cpu": 2}}, format="json")

    _assert_names_the_field(response, "resources.cpu", "between 0.1 and 1.0")


# --- update --------------------------------------------------------------------------------
def test_patch_resources_replaces_only_the_keys_given(api, service, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = api.patch("/api/v1/services/s", {"resources": {"cpu": 3}}, format="json")

    assert response.status_code == 202, response.content
    assert response.json()["resources"] == {"cpu": 3.0, "memory_mb": 2048}
    assert response.json()["replicas"]["desired"] == 1
    assert _stored() == {"cpu": 3.0, "memory_mb": 2048}
    assert len(callbacks) == 1  # a reconcile, enqueued after commit


def test_patch_null_returns_a_resource_to_the_default(api, service):
    response = api.patch("/api/v1/services/s", {"resources": {"memory_mb": None}}, format="json")

    assert response.status_code == 202, response.content
    assert response.json()["resources"] == {"cpu": 2.0, "memory_mb": 1024}
    assert _stored() == {"cpu": 2.0}


def test_patch_replicas_and_resources_together(api, service):
    response = api.patch("/api/v1/services/s", {"replicas": 2, "resources": {"memory_mb": 4096}}, format="json")

    assert response.status_code == 202
    assert (response.json()["replicas"]["desired"], response.json()["resources"]) == (
        2,
        {"cpu": 2.0, "memory_mb": 4096},
    )


def test_patch_replicas_alone_keeps_the_resources(api, service):
    response = api.patch("/api/v1/services/s", {"replicas": 3}, format="json")

    assert response.status_code == 202
    assert _stored() == {"cpu": 2.0, "memory_mb": 2048}


@pytest.mark.parametrize("requested, field, reason", BAD_RESOURCES)
def test_bad_resources_on_patch_answer_400_and_change_nothing(api, service, requested, field, reason):
    response = api.patch("/api/v1/services/s", {"replicas": 3, "resources": requested}, format="json")

    _assert_names_the_field(response, field, reason)
    service.refresh_from_db()
    assert (service.replicas, service.resources) == (1, {"cpu": 2.0, "memory_mb": 2048})


@pytest.mark.parametrize("body", [{}, {"replica": 3}])
def test_patch_with_neither_replicas_nor_resources_answers_400(api, service, body):
    response = api.patch("/api/v1/services/s", body, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"
    assert "replicas, autoscaling, resources" in response.json()["detail"]


def test_another_organizations_service_answers_404(outsider_api, service):
    response = outsider_api.patch("/api/v1/services/s", {"resources": {"cpu": 4}}, format="json")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert _stored() == {"cpu": 2.0, "memory_mb": 2048}


# --- the rule, shared by the API and the console -------------------------------------------
def test_check_normalizes_and_keeps_none():
    assert resources.check({"cpu": 2, "memory_mb": 512.0}) == {"cpu": 2.0, "memory_mb": 512}
    assert resources.check({"cpu": None}) == {"cpu": None}


def test_merge_replaces_given_keys_and_drops_none():
    assert resources.merge({"cpu": 2.0, "memory_mb": 512}, {"cpu": None, "memory_mb": 256}) == {"memory_mb": 256}


def test_openapi_schema_describes_resources(client):
    import yaml

    schemas = yaml.safe_load(client.get("/api/schema/").content)["components"]["schemas"]

    assert schemas["Service"]["properties"]["resources"]["allOf"] == [
        {"$ref": "#/components/schemas/EffectiveResources"}
    ]
    assert set(schemas["EffectiveResources"]["required"]) == {"cpu", "memory_mb"}
    assert set(schemas["ResourcesRequest"]["properties"]) == {"cpu", "memory_mb"}
    assert "resources" in schemas["ServiceCreateRequest"]["properties"]
    patchable = {"replicas", "autoscaling", "resources", "network", "timeout_s"}
    assert set(schemas["PatchedServiceUpdateRequest"]["properties"]) == patchable
