"""GET /api/v1/zones: the zones' health, the platform's, readable by any organization's member."""

import pytest

from controlplane.zones import zone_health_record

pytestmark = pytest.mark.django_db

LOST = "The Docker engine of zone-b cannot be reached: connection refused"


@pytest.fixture
def zones(settings):
    settings.MODELBAY_ZONES = {"zone-a": "", "zone-b": ""}
    zone_health_record(unreachable={"zone-b": LOST})


def test_any_organization_reads_every_zones_health(zones, api, outsider_api, predict_only_api):
    for client in (api, outsider_api, predict_only_api):
        response = client.get("/api/v1/zones")
        assert response.status_code == 200, response.content
        body = response.json()
        assert [(z["name"], z["reachable"], z["reason"]) for z in body] == [
            ("zone-a", True, ""),
            ("zone-b", False, LOST),
        ]
        assert set(body[0]) == {"name", "reachable", "reason", "checked_at", "changed_at"}


def test_zones_need_a_key(zones, client):
    response = client.get("/api/v1/zones")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"
