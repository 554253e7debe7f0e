"""A service's network: none (the default, no connection at all) or egress, asked for on
POST and PATCH, shown on GET."""

import pytest

from controlplane.models import Service

pytestmark = pytest.mark.django_db


@pytest.fixture
def service(api, digits):
    response = api.post("/api/v1/services", {"name": "s", "model": "digits"}, format="json")
    assert response.status_code == 202, response.content
    return Service.objects.get(slug="s")


def _stored(slug="s") -> str:
    return Service.objects.get(slug=slug, deleted_at__isnull=True).network


def _assert_network_refused(response, network):
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid_request"
    assert "network" in body["fields"]
    assert body["detail"].startswith("network: ")
    if isinstance(network, str):
        assert body["fields"]["network"] == [f'"{network}" is not a valid choice; give none or egress.']


# --- create --------------------------------------------------------------------------------
def test_a_service_has_no_network_by_default(api, digits):
    response = api.post("/api/v1/services", {"name": "s", "model": "digits"}, format="json")

    assert response.json()["network"] == "none"
    assert _stored() == "none"
    assert api.get("/api/v1/services/s").json()["network"] == "none"


def test_create_with_egress(api, digits):
    response = api.post("/api/v1/services", {"name": "s", "model": "digits", "network": "egress"}, format="json")

    assert response.status_code == 202, response.content
    assert response.json()["network"] == "egress"
    assert _stored() == "egress"
    assert api.get("/api/v1/services").json()[0]["network"] == "egress"


@pytest.mark.parametrize("network", ["internet", "EGRESS", "", None, 1])
def test_a_bad_network_on_create_answers_400(api, digits, network):
    response = api.post("/api/v1/services", {"name": "s", "model": "digits", "network": network}, format="json")

    _assert_network_refused(response, network)
    assert not Service.objects.exists()


# --- update --------------------------------------------------------------------------------
def test_patch_to_egress_and_back(api, service, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = api.patch("/api/v1/services/s", {"network": "egress"}, format="json")

    assert response.status_code == 202, response.content
    assert response.json()["network"] == "egress"
    assert _stored() == "egress"
    assert len(callbacks) == 1  # a reconcile, which starts the instances again

    response = api.patch("/api/v1/services/s", {"network": "none"}, format="json")

    assert response.status_code == 202
    assert api.get("/api/v1/services/s").json()["network"] == "none"


def test_patch_network_keeps_the_other_settings(api, service):
    api.patch("/api/v1/services/s", {"replicas": 2, "resources": {"cpu": 2}}, format="json")

    response = api.patch("/api/v1/services/s", {"network": "egress"}, format="json")

    assert (response.json()["replicas"]["desired"], response.json()["resources"]["cpu"]) == (2, 2.0)


def test_patch_replicas_alone_keeps_the_network(api, service):
    api.patch("/api/v1/services/s", {"network": "egress"}, format="json")

    api.patch("/api/v1/services/s", {"replicas": 3}, format="json")

    assert _stored() == "egress"


@pytest.mark.parametrize("network", ["internet", "", None])
def test_a_bad_network_on_patch_answers_400_and_changes_nothing(api, service, network):
    response = api.patch("/api/v1/services/s", {"replicas": 3, "network": network}, format="json")

    _assert_network_refused(response, network)
    service.refresh_from_db()
    assert (service.replicas, service.network) == (1, "none")


def test_another_organizations_key_cannot_change_the_network(outsider_api, service):
    response = outsider_api.patch("/api/v1/services/s", {"network": "egress"}, format="json")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert _stored() == "none"


def test_openapi_schema_describes_network_as_an_enum(client):
    import yaml

    schemas = yaml.safe_load(client.get("/api/schema/").content)["components"]["schemas"]

    assert schemas["ServiceNetworkEnum"]["enum"] == ["none", "egress"]
    for name in ["Service", "ServiceCreateRequest", "PatchedServiceUpdateRequest"]:
        assert schemas[name]["properties"]["network"]["allOf"] == [{"$ref": "#/components/schemas/ServiceNetworkEnum"}]
    assert schemas["ServiceCreateRequest"]["properties"]["network"]["default"] == "none"
