"""The zones' health on the console's home page."""

import pytest

from console.tests.helpers import url
from controlplane.zones import zone_health_record

pytestmark = pytest.mark.django_db


def test_home_shows_each_zone_and_why_one_is_unreachable(owner_client, settings):
    settings.MODELBAY_ZONES = {"zone-a": "", "zone-b": ""}
    zone_health_record(unreachable={"zone-b": "The Docker engine of zone-b cannot be reached: refused"})

    page = owner_client.get(url("home")).content.decode()

    assert '<tr data-zone="zone-a">' in page and '<tr data-zone="zone-b">' in page
    assert "unreachable" in page and "The Docker engine of zone-b cannot be reached: refused" in page
