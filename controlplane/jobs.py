"""Starting the worker's tasks from services: by name, after commit.

Services enqueue work without importing ``controlplane.tasks`` (which imports them), and
the worker sees the rows the task is about, since it starts only once they are committed.

A task is a nudge, not the record: the desired state is already committed when it is
sent, and beat's periodic reconcile (MODELBAY_RECONCILE_INTERVAL) acts on it whether or
not the nudge arrives. So a broker that is away does not fail the request that changed
the desired state; the work starts at the first reconcile after the broker is back.
"""

import logging

from celery import current_app
from django.db import transaction
from kombu.exceptions import OperationalError

logger = logging.getLogger(__name__)

PROVISION_SERVICE = "controlplane.tasks.provision_service"


def send(task_name: str, *args) -> None:
    try:
        current_app.send_task(task_name, args=args)
    except OperationalError as error:
        logger.warning("broker unavailable, %s%r left to the periodic reconcile: %s", task_name, args, error)


def enqueue_after_commit(task_name: str, *args) -> None:
    transaction.on_commit(lambda: send(task_name, *args))
