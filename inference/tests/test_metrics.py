"""Per-version call metrics: counted in memory on the hot path, stored in batches, read
back as counts, error rates and latency percentiles."""

from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane import selectors
from controlplane.models import VersionMetrics
from inference import metrics

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _empty_metrics():
    metrics._pending.clear()
    yield
    metrics._pending.clear()


@pytest.fixture
def service(api, digits_upload):
    api.post("/api/v1/models", {"name": "digits", "file": digits_upload}, format="multipart")
    api.post("/api/v1/services", {"name": "s", "model": "digits"}, format="json")
    from controlplane.models import Service

    return Service.objects.get(slug="s")


def _since():
    return timezone.now() - timedelta(minutes=5)


def test_calls_are_counted_per_version_with_errors_and_percentiles(service):
    for i in range(1000):  # version 1: 1..1000 ms, one error in 100
        metrics.record(service.pk, 1, error=i % 100 == 0, elapsed_s=(i + 1) / 1000)
    for _ in range(50):  # version 2: fast, never failing
        metrics.record(service.pk, 2, error=False, elapsed_s=0.003)
    metrics.flush()
    v1, v2 = selectors.version_stats(service=service, since=_since())
    assert (v1.version, v1.requests, v1.errors, v1.error_rate) == (1, 1000, 10, 0.01)
    assert 400 <= v1.p50_ms <= 600 and 900 <= v1.p99_ms <= 1000 and v1.p50_ms < v1.p95_ms <= v1.p99_ms
    assert (v2.requests, v2.errors) == (50, 0)
    assert 2 <= v2.p50_ms <= 5 and 2 <= v2.p99_ms <= 5


def test_batches_add_up_and_nothing_is_written_per_call(service, django_assert_num_queries):
    with django_assert_num_queries(0):
        for _ in range(300):
            metrics.record(service.pk, 1, error=False, elapsed_s=0.002)
    metrics.flush()
    for _ in range(200):
        metrics.record(service.pk, 1, error=True, elapsed_s=0.002)
    metrics.flush()  # adds to the same interval's row
    (v1,) = selectors.version_stats(service=service, since=_since())
    assert (v1.requests, v1.errors) == (500, 200)


def test_a_failed_flush_keeps_the_counts_for_the_next(service, monkeypatch):
    for _ in range(10):
        metrics.record(service.pk, 1, error=False, elapsed_s=0.01)

    def database_away(*args, **kwargs):
        raise RuntimeError("database away")

    monkeypatch.setattr(metrics, "_add", database_away)
    metrics.flush()
    assert selectors.version_stats(service=service, since=_since()) == []
    monkeypatch.undo()
    metrics.flush()
    assert selectors.version_stats(service=service, since=_since())[0].requests == 10


def test_quantiles_interpolate_inside_a_bucket():
    histogram = [0] * len(VersionMetrics.bucket_fields())
    histogram[VersionMetrics.BUCKETS_MS.index(25)] = 100  # all calls in (10, 25] ms
    assert selectors.quantile_ms(histogram, 0.5) == 17.5
    assert selectors.quantile_ms([0] * len(histogram), 0.5) is None
    histogram[-1] = 1000  # mostly over the last bound: reported as that bound
    assert selectors.quantile_ms(histogram, 0.99) == 10000.0


def test_metrics_api(api, service, outsider_api):
    for _ in range(20):
        metrics.record(service.pk, 1, error=False, elapsed_s=0.004)
    metrics.record(service.pk, 1, error=True, elapsed_s=0.004)
    metrics.flush()
    response = api.get("/api/v1/services/s/metrics", {"window": "15m"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["window_s"] == 900
    (v1,) = body["versions"]
    assert (v1["version"], v1["requests"], v1["errors"]) == (1, 21, 1)
    assert v1["error_rate"] == pytest.approx(1 / 21) and 2 <= v1["p50_ms"] <= 5

    assert api.get("/api/v1/services/s/metrics").json()["window_s"] == 900  # the default
    for window in ("15", "0m", "8d", "5s", "1w"):
        bad = api.get("/api/v1/services/s/metrics", {"window": window})
        assert bad.status_code == 400 and "window" in bad.json()["fields"], window
    assert outsider_api.get("/api/v1/services/s/metrics").status_code == 404


def test_a_version_without_calls_shows_zeros(api, service):
    body = api.get("/api/v1/services/s/metrics").json()
    assert body["versions"] == [
        {"version": 1, "requests": 0, "errors": 0, "error_rate": 0.0, "p50_ms": None, "p95_ms": None, "p99_ms": None}
    ]


def test_old_metrics_are_pruned(service, settings):
    from controlplane.tasks import prune_metrics

    settings.MODELBAY_METRICS_RETENTION_DAYS = 1
    VersionMetrics.objects.create(
        service_id=service.pk, version=1, start=timezone.now() - timedelta(days=2), requests=5
    )
    VersionMetrics.objects.create(service_id=service.pk, version=1, start=timezone.now(), requests=7)
    prune_metrics()
    assert list(VersionMetrics.objects.values_list("requests", flat=True)) == [7]
