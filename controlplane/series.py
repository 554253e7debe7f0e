"""A service's figures over time, for its charts.

- Per version: calls and errors per second, p50 and p99 latency, from the gateways' 10-second
  ``VersionMetrics`` rows.
- Per service: calls in flight and replicas (desired, ready), from ``ServiceSample`` rows the
  worker records every ``ServiceSample.INTERVAL_S`` (``record_samples``, a beat task).

Points are ``step_s`` apart: the rows' own 10 s over an hour, coarser over longer windows so
that a chart never has more than about ``MAX_POINTS``. Columns, not rows (the charting
library's shape): ``times`` and, for each figure, one value per time (None: nothing then).
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timedelta

from django.db.models import Count
from django.utils import timezone

from controlplane import load
from controlplane.selectors import quantile_ms  # the same percentiles as the metrics API
from controlplane.choices import InstanceStatus
from controlplane.models import Instance, Service, ServiceSample, VersionMetrics

MAX_POINTS = 360


def _bucket_start(at: datetime, step_s: int) -> datetime:
    return datetime.fromtimestamp(int(at.timestamp()) // step_s * step_s, tz=at.tzinfo)


def record_samples(*, now: datetime | None = None) -> int:
    """One sample per live service for the current interval (a second call in the same
    interval keeps the first); how many were recorded."""
    now = now or timezone.now()
    start = _bucket_start(now, ServiceSample.INTERVAL_S)
    live = list(Service.objects.filter(deleted_at__isnull=True).values_list("id", "replicas"))
    if not live:
        return 0
    ready = dict(
        Instance.objects.filter(
            deployment__service_id__in=[service_id for service_id, _ in live],
            deployment__retired_at__isnull=True,
            status=InstanceStatus.READY,
        )
        .values_list("deployment__service_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    try:
        loads = load.read_all()
    except load.LoadUnknown:
        loads = None
    samples = [
        ServiceSample(
            service_id=service_id,
            start=start,
            in_flight=None if loads is None else round(loads[service_id].in_flight, 2) if service_id in loads else 0.0,
            desired=replicas,
            ready=ready.get(service_id, 0),
        )
        for service_id, replicas in live
    ]
    ServiceSample.objects.bulk_create(samples, ignore_conflicts=True)
    return len(samples)


def step_for(window_s: int) -> int:
    """Seconds between points: a multiple of the rows' 10 s, at most MAX_POINTS points."""
    base = VersionMetrics.INTERVAL_S
    return base * max(1, math.ceil(window_s / base / MAX_POINTS))


def service_series(*, service: Service, window_s: int, now: datetime | None = None) -> dict:
    """The service's figures over the last ``window_s`` seconds (see the module's doc)."""
    now = now or timezone.now()
    step_s = step_for(window_s)
    first = _bucket_start(now - timedelta(seconds=window_s), step_s)
    times = [first + timedelta(seconds=step_s * i) for i in range(int((now - first).total_seconds()) // step_s + 1)]
    index = {at: i for i, at in enumerate(times)}
    return {
        "window_s": window_s,
        "step_s": step_s,
        "times": [int(at.timestamp()) for at in times],
        "versions": _version_columns(service, first, step_s, index),
        **_service_columns(service, first, step_s, index),
    }


def _version_columns(service: Service, since: datetime, step_s: int, index: dict) -> dict[str, dict]:
    fields = VersionMetrics.bucket_fields()
    sums: dict[int, dict[int, list[int]]] = defaultdict(dict)  # version -> point -> [calls, errors, *histogram]
    rows = VersionMetrics.objects.filter(service_id=service.pk, start__gte=since).values_list(
        "version", "start", "requests", "errors", *fields
    )
    for version, start, *counts in rows.iterator():
        point = index.get(_bucket_start(start, step_s))
        if point is None:
            continue
        total = sums[version].setdefault(point, [0] * len(counts))
        for i, value in enumerate(counts):
            total[i] += value
    columns = {}
    for version, points in sorted(sums.items()):
        calls, errors, p50, p99 = ([None] * len(index) for _ in range(4))
        for point, (requests, failed, *histogram) in points.items():
            calls[point] = round(requests / step_s, 3)
            errors[point] = round(failed / step_s, 3)
            p50[point] = quantile_ms(histogram, 0.50)
            p99[point] = quantile_ms(histogram, 0.99)
        columns[str(version)] = {"calls_per_s": calls, "errors_per_s": errors, "p50_ms": p50, "p99_ms": p99}
    return columns


def _service_columns(service: Service, since: datetime, step_s: int, index: dict) -> dict[str, list]:
    in_flight, desired, ready = ([None] * len(index) for _ in range(3))
    seen: dict[int, list[tuple]] = defaultdict(list)
    rows = ServiceSample.objects.filter(service_id=service.pk, start__gte=since).values_list(
        "start", "in_flight", "desired", "ready"
    )
    for start, *values in rows.iterator():
        point = index.get(_bucket_start(start, step_s))
        if point is not None:
            seen[point].append(values)
    for point, samples in seen.items():
        loads = [value for value, _, _ in samples if value is not None]
        in_flight[point] = round(sum(loads) / len(loads), 2) if loads else None
        desired[point] = max(value for _, value, _ in samples)  # the most asked for within the point
        ready[point] = min(value for _, _, value in samples)  # the fewest there were
    return {"in_flight": in_flight, "replicas_desired": desired, "replicas_ready": ready}
