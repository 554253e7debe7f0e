"""Celery tasks: thin wrappers over controlplane.reconcile."""

import logging
from datetime import timedelta

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from controlplane import autoscaler, packages, reconcile, releases, series
from controlplane.backends import get_backend, instance_log
from controlplane.models import AutoscalerDecision, ColdStart, Instance, ModelVersion, ServiceSample, VersionMetrics

logger = logging.getLogger(__name__)


@shared_task
def provision_service(service_id: int) -> None:
    """Converge one service now (after create, scale or delete) until nothing is starting."""
    reconcile.service_converge(service_id)


@shared_task
def reconcile_all() -> None:
    """Periodic (beat): restart what died, remove orphans, refresh statuses."""
    for service_id in reconcile.reconcile_all():
        provision_service.delay(service_id)


@shared_task
def advance_releases() -> None:
    """Periodic (beat, every MODELBAY_RELEASE_TICK_S): move releases whose step is due."""
    releases.advance_all()


@shared_task
def autoscale() -> None:
    """Periodic (beat, every MODELBAY_AUTOSCALE_TICK_S): autoscaled services' replicas from their load."""
    autoscaler.tick()


@shared_task
def record_samples() -> None:
    """Periodic (beat, every ServiceSample.INTERVAL_S): each live service's calls in flight
    and replicas, for its charts."""
    series.record_samples()


@shared_task
def prune_metrics() -> None:
    """Periodic (beat): drop call metrics, samples, autoscaler decisions and cold starts older
    than MODELBAY_METRICS_RETENTION_DAYS."""
    cutoff = timezone.now() - timedelta(days=settings.MODELBAY_METRICS_RETENTION_DAYS)
    VersionMetrics.objects.filter(start__lt=cutoff).delete()
    AutoscalerDecision.objects.filter(at__lt=cutoff).delete()
    ColdStart.objects.filter(requested_at__lt=cutoff).delete()
    ServiceSample.objects.filter(start__lt=cutoff).delete()


# A log outlives its instance's row by this long, for an operator to read (the API can't).
GONE_INSTANCE_LOG_KEEP_S = 24 * 3600


@shared_task
def prune_instance_logs() -> None:
    """Periodic (beat): remove the logs, on this host, of instances gone for a day. Each log
    is bounded (MODELBAY_INSTANCE_LOG_BYTES), but instances come and go (scale to zero,
    releases, deletes), each with logs of its own."""
    keep = set(Instance.objects.values_list("id", flat=True))
    logs = instance_log.folder(settings.MODELBAY_RUN_DIR)
    removed = instance_log.prune(logs, keep=keep, idle_s=GONE_INSTANCE_LOG_KEEP_S)
    if removed:
        logger.info("removed %d log files of instances gone for a day", len(removed))


@shared_task
def prune_storage() -> None:
    """Periodic (beat): remove, on this host, the artifacts of deleted models and what a
    process that died mid-upload left (after a day: nothing still being written)."""
    keep = set(ModelVersion.objects.values_list("sha256", flat=True))
    removed = packages.prune_storage(
        artifact_root=settings.MODELBAY_ARTIFACT_ROOT,
        tmp_dir=settings.MODELBAY_UPLOAD_TMP_DIR,
        keep=keep,
        older_than_s=GONE_INSTANCE_LOG_KEEP_S,
    )
    if removed:
        logger.info("removed %d stored packages or upload leftovers no model refers to", len(removed))


def _instance_exited(instance_id: str) -> None:
    close_old_connections()  # runs in the backend's long-lived watcher thread
    try:
        service_id = Instance.objects.filter(pk=instance_id).values_list("deployment__service_id", flat=True).first()
        if service_id is not None:  # else stopped on purpose with its instance, or an orphan
            logger.info("instance %s exited; reconciling its service now", instance_id)
            provision_service.delay(service_id)
    except Exception:  # the periodic reconcile still covers it; the watcher must go on
        logger.exception("reacting to the exit of instance %s", instance_id)


@worker_ready.connect
def _watch_runtime_backend(**_) -> None:
    """A worker reacts to instances that stop as they stop (where the backend can tell)."""
    get_backend().watch(_instance_exited)
