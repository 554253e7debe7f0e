"""Starting the worker's tasks from services, by name.

Services enqueue work without importing ``controlplane.tasks`` (which imports them), after
their transaction commits, so that the worker sees the rows the task is about.

A task is a nudge, not the record: the desired state is already committed when it is
sent, and beat's periodic reconcile (MODELBAY_RECONCILE_INTERVAL) acts on it whether or
not the nudge arrives. So a broker that is away does not fail the request that changed
the desired state; the work starts at the first reconcile after the broker is back.
"""

import logging

from celery import current_app
from kombu.exceptions import OperationalError

logger = logging.getLogger(__name__)

PROVISION_SERVICE = "controlplane.tasks.provision_service"


def send(task_name: str, *args) -> None:
    try:
        current_app.send_task(task_name, args=args)
    except OperationalError as error:
        logger.warning("broker unavailable, %s%r left to the periodic reconcile: %s", task_name, args, error)

