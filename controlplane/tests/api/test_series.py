"""A service's figures over time for its charts (controlplane/series.py and
``GET /api/v1/services/{slug}/metrics/series``): per version from the gateways' 10-second
rows, calls in flight and replicas from the worker's samples; points coarser over longer
windows; nothing of another tenant's."""

from datetime import datetime, timedelta, timezone

import pytest

from controlplane import load, series, services
from controlplane.models import ServiceSample, VersionMetrics

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 30, 12, 0, 5, tzinfo=timezone.utc)


@pytest.fixture
def service(api, digits):
    assert api.post("/api/v1/services", {"name": "s", "model": "digits"}, format="json").status_code == 202
    from controlplane.models import Service

    return Service.objects.get(slug="s")


def _row(service, version, seconds_ago, *, requests, errors=0, le_10ms=0, le_100ms=0):
    start = NOW.replace(second=0) - timedelta(seconds=seconds_ago)
    VersionMetrics.objects.create(
        service_id=service.pk, version=version, start=start, requests=requests, errors=errors,
        le_10ms=le_10ms, le_100ms=le_100ms,
    )  # fmt: skip


def test_points_are_ten_seconds_apart_over_an_hour_with_gaps_as_null(service):
    _row(service, 1, 60, requests=50, errors=5, le_10ms=45, le_100ms=5)
    _row(service, 1, 30, requests=20, le_10ms=20)

    figures = series.service_series(service=service, window_s=3600, now=NOW)

    assert figures["step_s"] == 10 and len(figures["times"]) == 361
    calls = figures["versions"]["1"]["calls_per_s"]
    at = {t: i for i, t in enumerate(figures["times"])}
    minute_ago = at[int((NOW.replace(second=0) - timedelta(seconds=60)).timestamp())]
    assert calls[minute_ago] == 5.0  # 50 calls over 10 s
    assert figures["versions"]["1"]["errors_per_s"][minute_ago] == 0.5
    assert 5 < figures["versions"]["1"]["p50_ms"][minute_ago] <= 10  # the 45 calls of the 5-10 ms bucket
    assert 50 < figures["versions"]["1"]["p99_ms"][minute_ago] <= 100  # the 5 of the 50-100 ms one
    assert calls[minute_ago + 1] is None  # no call then: a gap, not a zero
    assert sum(1 for value in calls if value is not None) == 2


def test_a_day_is_coarser_and_adds_up_the_rows(service):
    for seconds_ago in (600, 610, 620):
        _row(service, 1, seconds_ago, requests=30, le_10ms=30)

    figures = series.service_series(service=service, window_s=86400, now=NOW)

    assert figures["step_s"] == 240 and len(figures["times"]) <= series.MAX_POINTS + 1
    calls = [value for value in figures["versions"]["1"]["calls_per_s"] if value is not None]
    assert sum(value * 240 for value in calls) == pytest.approx(90)


def test_samples_give_calls_in_flight_and_replicas(service, settings, tmp_path):
    settings.REDIS_URL = ""  # the embedded default's reports: files in the run folder
    settings.MODELBAY_RUN_DIR = tmp_path
    load.publish("gateway-1", {service.pk: (3.5, 4)})
    assert series.record_samples(now=NOW) == 1
    assert series.record_samples(now=NOW + timedelta(seconds=2)) == 1  # the same interval: kept once
    services.service_update(service=service, replicas=3)
    series.record_samples(now=NOW + timedelta(seconds=10))

    assert ServiceSample.objects.count() == 2
    figures = series.service_series(service=service, window_s=600, now=NOW + timedelta(seconds=15))
    assert [v for v in figures["in_flight"] if v is not None] == [3.5, 3.5]
    assert [v for v in figures["replicas_desired"] if v is not None] == [1, 3]
    assert [v for v in figures["replicas_ready"] if v is not None] == [0, 0]


def test_the_api_answers_the_series_and_keeps_it_to_its_tenant(api, outsider_api, service):
    _row(service, 1, 30, requests=10, le_10ms=10)

    body = api.get("/api/v1/services/s/metrics/series?window=24h").json()
    assert (body["window_s"], body["step_s"]) == (86400, 240)
    assert set(body) == {"window_s", "step_s", "times", "versions", "in_flight", "replicas_desired", "replicas_ready"}
    assert api.get("/api/v1/services/s/metrics/series").json()["window_s"] == 3600  # an hour by default

    refused = api.get("/api/v1/services/s/metrics/series?window=forever")
    assert refused.status_code == 400 and refused.json()["code"] == "invalid_request"
    assert outsider_api.get("/api/v1/services/s/metrics/series").status_code == 404
