"""Celery tasks: thin wrappers over controlplane.reconcile."""

import logging
from datetime import timedelta

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from controlplane import reconcile, releases
from controlplane.backends import get_backend
from controlplane.models import Instance, VersionMetrics

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
def prune_metrics() -> None:
    """Periodic (beat): drop call metrics older than MODELBAY_METRICS_RETENTION_DAYS."""
    cutoff = timezone.now() - timedelta(days=settings.MODELBAY_METRICS_RETENTION_DAYS)
    VersionMetrics.objects.filter(start__lt=cutoff).delete()


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
