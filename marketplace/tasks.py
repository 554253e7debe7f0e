"""Celery tasks of the marketplace."""

from celery import shared_task

from marketplace import metering


@shared_task
def prune_usage_batches() -> int:
    """Periodic (beat): forget the names of usage batches stored long ago."""
    return metering.prune_batches()
