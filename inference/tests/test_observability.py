"""/metrics in one process: off without a token, refused without the right one, and the
figures a call through the gateway adds (its refusals included)."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.django_db


def _value(text: str, name: str, **labels) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def test_metrics_are_off_without_a_token(client, settings):
    settings.MODELBAY_METRICS_TOKEN = ""
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_metrics_need_the_token(client, settings):
    settings.MODELBAY_METRICS_TOKEN = "s3cret-token"
    for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer wrong"}, {"HTTP_AUTHORIZATION": "s3cret-token"}):
        response = client.get("/metrics", **headers)
        assert response.status_code == 401 and response.json()["code"] == "unauthenticated"
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")


def test_a_refused_call_is_counted_by_its_code(client, api, settings):
    settings.MODELBAY_METRICS_TOKEN = "t"

    def scrape() -> str:
        return client.get("/metrics", HTTP_AUTHORIZATION="Bearer t").content.decode()

    before = scrape()
    assert api.post("/api/v1/services/nothing-here/predict", {"inputs": [1]}, format="json").status_code == 404
    assert api.post("/v2/models/nothing-here/infer", {"inputs": []}, format="json").status_code == 404
    after = scrape()
    for kind in ("service", "oip"):
        name, labels = "modelbay_gateway_rejections_total", {"route_kind": kind, "code": "not_found"}
        assert _value(after, name, **labels) - _value(before, name, **labels) == 1
        name, labels = "modelbay_gateway_calls_total", {"route_kind": kind, "status_class": "4xx", "service": ""}
        assert _value(after, name, **labels) - _value(before, name, **labels) == 1
