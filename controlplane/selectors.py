"""Reads of models and services, always scoped to one organization.

A missing object and another organization's object raise the same Http404.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, F, Prefetch, QuerySet, Sum, Window
from django.db.models.functions import RowNumber
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils import timezone

from controlplane import load
from controlplane.backends import get_backend
from controlplane.choices import LIVE_INSTANCE_STATUSES, InstanceStatus
from controlplane.models import (
    AutoscalerDecision,
    ColdStart,
    Deployment,
    Instance,
    Model,
    ModelVersion,
    Release,
    Service,
    VersionMetrics,
)


def model_list(*, organization_id: int) -> QuerySet[Model]:
    return Model.objects.filter(organization_id=organization_id).prefetch_related("versions")


def model_get(*, organization_id: int, slug: str) -> Model:
    return get_object_or_404(model_list(organization_id=organization_id), slug=slug)


def model_version_get(*, organization_id: int, model_slug: str, version: int) -> ModelVersion:
    return get_object_or_404(
        ModelVersion.objects.select_related("model"),
        model__organization_id=organization_id,
        model__slug=model_slug,
        version=version,
    )


def model_is_deployed(*, model: Model) -> bool:
    return Deployment.objects.filter(model_version__model=model).exists()


def service_list(*, organization_id: int) -> QuerySet[Service]:
    instances = Instance.objects.order_by("created_at")
    deployments = Deployment.objects.select_related("model_version").prefetch_related(
        Prefetch("instances", queryset=instances)
    )
    return (
        Service.objects.filter(organization_id=organization_id, deleted_at__isnull=True)
        .select_related("model")
        .prefetch_related(Prefetch("deployments", queryset=deployments))
    )


def service_get(*, organization_id: int, slug: str) -> Service:
    return get_object_or_404(service_list(organization_id=organization_id), slug=slug)


def service_instances(*, service: Service) -> list[Instance]:
    """Every instance of the service, the finished ones included, oldest first."""
    return [instance for deployment in service.deployments.all() for instance in deployment.instances.all()]


def autoscaler_decisions(*, service: Service, limit: int) -> list[AutoscalerDecision]:
    """The autoscaler's latest changes of the service's replicas, newest first (the
    service comes from ``service_get``, scoped to its organization)."""
    return list(AutoscalerDecision.objects.filter(service=service).order_by("-at", "-id")[:limit])


def cold_starts(*, service: Service, limit: int) -> list[ColdStart]:
    """The service's latest starts from zero, newest first."""
    return list(ColdStart.objects.filter(service=service).order_by("-requested_at", "-id")[:limit])


@dataclass(frozen=True)
class Replicas:
    """A service's replicas as they are: desired per version, ready, and per zone."""

    desired: int
    ready: int
    by_zone: dict[str, dict[str, int]]  # zone -> {"desired": instances placed there, "ready": ...}


def service_replicas(*, service: Service) -> Replicas:
    """From the instances of the versions it runs (prefetched by ``service_list``)."""
    by_zone: dict[str, dict[str, int]] = {}
    ready = 0
    for deployment in service.live_deployments():
        for instance in deployment.instances.all():
            if instance.status not in LIVE_INSTANCE_STATUSES:
                continue
            zone = by_zone.setdefault(instance.zone, {"desired": 0, "ready": 0})
            zone["desired"] += 1
            if instance.status == InstanceStatus.READY:
                zone["ready"] += 1
                ready += 1
    return Replicas(desired=service.replicas, ready=ready, by_zone=dict(sorted(by_zone.items())))


def service_in_flight(*, service: Service) -> int | None:
    """The service's calls in flight now, over every gateway process (their last reports);
    None when the reports cannot be read."""
    return services_in_flight(services=[service])[service.pk]


def services_in_flight(*, services: list[Service]) -> dict[int, int | None]:
    """``service_in_flight`` of each service, from one read of their reports: service id -> calls."""
    try:
        reported = load.read_many([service.pk for service in services])
    except load.LoadUnknown:
        return {service.pk: None for service in services}
    return {service.pk: reported[service.pk].now if service.pk in reported else 0 for service in services}


@dataclass(frozen=True)
class ColdStarts:
    """A service's recent starts from zero: how many, and how long they took."""

    count: int
    starting: bool  # one is under way
    last_at: datetime | None
    last_s: float | None
    p50_s: float | None
    p95_s: float | None


COLD_STARTS_SUMMED = 100


def _percentile(ordered: list[float], q: float) -> float | None:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


def service_cold_starts(*, service: Service) -> ColdStarts:
    """Its cold starts kept (MODELBAY_METRICS_RETENTION_DAYS); the times over the last
    ``COLD_STARTS_SUMMED`` that completed."""
    return services_cold_starts(services=[service])[service.pk]


def services_cold_starts(*, services: list[Service]) -> dict[int, ColdStarts]:
    """``service_cold_starts`` of each service, in two queries: service id -> cold starts."""
    ids = [service.pk for service in services]
    newest_first = Window(
        RowNumber(), partition_by=F("service_id"), order_by=[F("requested_at").desc(), F("id").desc()]
    )
    latest = (
        ColdStart.objects.filter(service_id__in=ids).annotate(rank=newest_first).filter(rank__lte=COLD_STARTS_SUMMED)
    )
    starts: dict[int, list[ColdStart]] = {service_id: [] for service_id in ids}
    for start in latest.order_by("service_id", "rank"):
        starts[start.service_id].append(start)
    many = [service_id for service_id, kept in starts.items() if len(kept) == COLD_STARTS_SUMMED]
    counts = dict(
        ColdStart.objects.filter(service_id__in=many).values_list("service_id").annotate(n=Count("id")) if many else []
    )
    return {
        service_id: _cold_starts_summary(kept, counts.get(service_id, len(kept))) for service_id, kept in starts.items()
    }


def _cold_starts_summary(starts: list[ColdStart], count: int) -> ColdStarts:
    """``starts``: the newest first."""
    times = sorted(start.seconds for start in starts if start.seconds is not None)
    last = starts[0] if starts else None
    # One that is not ready within an instance's ready timeout has failed: not under way.
    timeout = timedelta(seconds=settings.MODELBAY_READY_TIMEOUT)
    return ColdStarts(
        count=count,
        starting=bool(last and last.ready_at is None and last.requested_at > timezone.now() - timeout),
        last_at=last.requested_at if last else None,
        last_s=last.seconds if last else None,
        p50_s=_percentile(times, 0.5),
        p95_s=_percentile(times, 0.95),
    )


def release_get(*, organization_id: int, slug: str, release_id: int) -> Release:
    return get_object_or_404(
        Release.objects.select_related("service"),
        pk=release_id,
        service__organization_id=organization_id,
        service__slug=slug,
        service__deleted_at__isnull=True,
    )


def live_deployments(*, service: Service) -> QuerySet[Deployment]:
    """The versions a service runs (not those being taken out), oldest version first."""
    return service.deployments.filter(retired_at__isnull=True).select_related("model_version")


def live_instances(*, service: Service) -> QuerySet[Instance]:
    return Instance.objects.filter(deployment__service=service, status__in=LIVE_INSTANCE_STATUSES)


def service_instance_get(*, service: Service, instance_id: str | None) -> Instance:
    """One instance of the service (the newest when none is named); 404 for any other."""
    instances = Instance.objects.filter(deployment__service=service)
    if instance_id is None:
        instance = instances.order_by("-created_at").first()
        if instance is None:
            raise Http404("This service has no instances.")
        return instance
    return get_object_or_404(instances, pk=instance_id)


def instance_logs(*, instance: Instance, tail: int) -> str:
    """The last ``tail`` lines the instance's runtime printed (its traceback, when it failed)."""
    return get_backend().logs(instance.id, tail=tail)


# --- call metrics ---------------------------------------------------------------------
@dataclass(frozen=True)
class VersionStats:
    """A version's calls over a window: how many, how many failed, and latency percentiles."""

    version: int
    requests: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def version_stats(*, service: Service, since: datetime, until: datetime | None = None) -> list[VersionStats]:
    """Per version, the calls counted in intervals that started at ``since`` or later."""
    fields = VersionMetrics.bucket_fields()
    rows = VersionMetrics.objects.filter(service_id=service.pk, start__gte=since)
    if until is not None:
        rows = rows.filter(start__lt=until)
    totals = (
        rows.values("version")
        .order_by("version")
        .annotate(n=Sum("requests"), e=Sum("errors"), **{f: Sum(f) for f in fields})
    )
    stats = []
    for row in totals:
        histogram = [row[f] or 0 for f in fields]
        stats.append(
            VersionStats(
                version=row["version"],
                requests=row["n"] or 0,
                errors=row["e"] or 0,
                p50_ms=quantile_ms(histogram, 0.50),
                p95_ms=quantile_ms(histogram, 0.95),
                p99_ms=quantile_ms(histogram, 0.99),
            )
        )
    return stats


def quantile_ms(histogram: list[int], q: float) -> float | None:
    """The q-quantile of a latency histogram, interpolated inside its bucket (as
    Prometheus' histogram_quantile does); calls over the last bound count as that bound."""
    total = sum(histogram)
    if total == 0:
        return None
    rank = q * total
    bounds = VersionMetrics.BUCKETS_MS
    seen = 0
    for i, count in enumerate(histogram):
        if count and seen + count >= rank:
            if i == len(bounds):
                return float(bounds[-1])
            lower = bounds[i - 1] if i else 0.0
            return round(lower + (bounds[i] - lower) * (rank - seen) / count, 3)
        seen += count
    return float(bounds[-1])


def service_version_stats(*, service: Service, since: datetime) -> list[VersionStats]:
    """``version_stats``, with the service's versions that had no calls as zeros."""
    stats = {entry.version: entry for entry in version_stats(service=service, since=since)}
    for deployment in service.live_deployments():
        version = deployment.model_version.version
        if version not in stats:
            stats[version] = VersionStats(version, 0, 0, None, None, None)
    return [stats[version] for version in sorted(stats)]
