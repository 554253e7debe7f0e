"""Celery tasks of the marketplace."""

from celery import shared_task

from marketplace import metering


@shared_task
def flush_usage() -> int:
    """Periodic (beat): store the metered app calls counted since the last flush."""
    return metering.meter().flush()
