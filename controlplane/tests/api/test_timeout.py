"""A service's call deadline (``timeout_s``): the installation's default, or its own up to
MODELBAY_MAX_TIMEOUT_S, asked for on POST and PATCH, shown on GET. That the gateway keeps
to it: tests/test_core_path.py."""

import pytest

from controlplane.models import Service
from modelbay.core import generation

pytestmark = pytest.mark.django_db


def test_the_default_deadline_is_the_installations(api, digits, settings):
    settings.MODELBAY_PREDICT_TIMEOUT = 30.0
    response = api.post("/api/v1/services", {"name": "s", "model": "digits"}, format="json")
    assert response.status_code == 202 and response.json()["timeout_s"] == 30
    assert Service.objects.get(slug="s").timeout_s is None  # follows the default if it changes


def test_a_long_deadline_for_long_predictions(api, digits, django_capture_on_commit_callbacks):
    body = {"name": "s", "model": "digits", "timeout_s": 900}
    assert api.post("/api/v1/services", body, format="json").json()["timeout_s"] == 900
    assert Service.objects.get(slug="s").call_timeout_s() == 900

    before = generation.current()
    with django_capture_on_commit_callbacks(execute=True):
        response = api.patch("/api/v1/services/s", {"timeout_s": 120}, format="json")
    assert response.status_code == 202 and response.json()["timeout_s"] == 120
    assert generation.current() != before  # the gateways load their routing tables again, with it


@pytest.mark.parametrize("timeout_s", [0, -1, 901, "soon"])
def test_a_deadline_out_of_range_answers_400(api, digits, timeout_s):
    response = api.post("/api/v1/services", {"name": "s", "model": "digits", "timeout_s": timeout_s}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_request" and "timeout_s" in response.json()["detail"]
    assert not Service.objects.exists()


def test_another_tenant_cannot_change_it(api, outsider_api, digits):
    api.post("/api/v1/services", {"name": "s", "model": "digits"}, format="json")
    assert outsider_api.patch("/api/v1/services/s", {"timeout_s": 5}, format="json").status_code == 404
    assert Service.objects.get(slug="s").timeout_s is None
