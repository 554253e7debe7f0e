"""Celery tasks: thin wrappers over controlplane.reconcile."""

from celery import shared_task

from controlplane import reconcile


@shared_task
def provision_service(service_id: int) -> None:
    """Converge one service now (after create, scale or delete) until nothing is starting."""
    reconcile.service_converge(service_id)


@shared_task
def reconcile_all() -> None:
    """Periodic (beat): restart what died, remove orphans, refresh statuses."""
    for service_id in reconcile.reconcile_all():
        provision_service.delay(service_id)
