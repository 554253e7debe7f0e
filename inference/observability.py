"""The gateway's Prometheus metrics, served at ``/metrics`` for operators' scrapers.

Counted on the hot path with prometheus-client (a few microseconds a call). With several
web processes, ``PROMETHEUS_MULTIPROC_DIR`` names a folder they all write their figures to
(gunicorn.conf.py empties it at start and clears a dead worker's gauges), and a scrape adds
them up across processes; without it, figures are this process's own. Labels name an
organization by its id and a service by its slug (unique within its organization).

- ``modelbay_gateway_calls_total{route_kind, organization, service, version, status_class}``:
  calls answered, ``route_kind`` one of ``service`` (``/api/v1/services/…/predict``), ``app``
  (``/api/v1/apps/…/predict``), ``oip`` (``/v2/…``); calls refused before a service was
  found have empty service labels.
- ``modelbay_gateway_call_seconds{route_kind}``: from the call's arrival at the view to its answer.
- ``modelbay_gateway_upstream_seconds{organization, service}``: the runtime's part.
- ``modelbay_gateway_in_flight{organization, service}``: calls being forwarded right now.
- ``modelbay_gateway_rejections_total{route_kind, code}``: the gateway's own error answers by
  their ``code`` (``quota_exceeded``, ``rate_limited``, ``unavailable``, ``upstream_timeout``,
  ``not_found``, ...); a model's own 4xx answers are calls, not rejections.
- ``modelbay_cold_starts_total{organization, service}``: services at zero woken by a call
  (counted by the process whose call woke it).
- ``modelbay_gateway_held_seconds{organization, service}``: how long calls were held while
  their service started from zero (``inference.coldstart``).
- ``modelbay_instances_ready{organization, service, zone}``: read from the database at
  each scrape.
"""

from __future__ import annotations

import os

from django.db.models import Count
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

from controlplane.choices import InstanceStatus
from controlplane.models import Instance

# From a fast model's millisecond to a long prediction's quarter of an hour.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

CALLS = Counter(
    "modelbay_gateway_calls",
    "Calls the gateway answered.",
    ["route_kind", "organization", "service", "version", "status_class"],
)
CALL_SECONDS = Histogram(
    "modelbay_gateway_call_seconds",
    "Time from a call's arrival at the gateway to its answer.",
    ["route_kind"],
    buckets=LATENCY_BUCKETS,
)
UPSTREAM_SECONDS = Histogram(
    "modelbay_gateway_upstream_seconds",
    "Time a service's runtime took to answer a forwarded call.",
    ["organization", "service"],
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "modelbay_gateway_in_flight",
    "Calls being forwarded to a service's runtime now.",
    ["organization", "service"],
    multiprocess_mode="livesum",
)
QUEUED = Gauge(
    "modelbay_gateway_queued",
    "Calls waiting behind a cap on calls in flight, by the cap's kind.",
    ["cap"],
    multiprocess_mode="livesum",
)
REJECTIONS = Counter(
    "modelbay_gateway_rejections",
    "Calls the gateway answered with an error of its own, by the error's code.",
    ["route_kind", "code"],
)
COLD_STARTS = Counter(
    "modelbay_cold_starts",
    "Services at zero woken by a call.",
    ["organization", "service"],
)
HELD_SECONDS = Histogram(
    "modelbay_gateway_held_seconds",
    "Time a call was held while its service started from zero.",
    ["organization", "service"],
    buckets=LATENCY_BUCKETS,
)


class ReadyInstances:
    """``modelbay_instances_ready``, counted in the database when scraped."""

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "modelbay_instances_ready",
            "Ready instances per service and zone.",
            labels=["organization", "service", "zone"],
        )

    def describe(self):
        """What it yields, without a query (asked when it is registered)."""
        yield self._family()

    def collect(self):
        family = self._family()
        rows = (
            Instance.objects.filter(status=InstanceStatus.READY, deployment__service__deleted_at__isnull=True)
            .values_list("deployment__service__organization_id", "deployment__service__slug", "zone")
            .annotate(ready=Count("id"))
            .order_by()
        )
        for organization, service, zone, ready in rows:
            family.add_metric([str(organization), service, zone], ready)
        yield family


def _multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


if not _multiprocess():
    REGISTRY.register(ReadyInstances())


def record_call(route_kind: str, status: int, service: tuple[str, str, str], code: str, elapsed_s: float) -> None:
    """Count one answered call: ``service`` is (organization, service, version) when it
    reached one, ``code`` the error's code when the gateway refused or failed it."""
    CALLS.labels(route_kind, *service, f"{status // 100}xx").inc()
    CALL_SECONDS.labels(route_kind).observe(elapsed_s)
    if status >= 400 and code:
        REJECTIONS.labels(route_kind, code).inc()


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format: every web process's, added up."""
    if not _multiprocess():
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(ReadyInstances())
    return generate_latest(registry), CONTENT_TYPE_LATEST
