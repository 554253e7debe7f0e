"""Starting the worker's tasks from services: by name, after commit.

Services enqueue work without importing ``controlplane.tasks`` (which imports them), and
the worker sees the rows the task is about, since it starts only once they are committed.
"""

from celery import current_app
from django.db import transaction

PROVISION_SERVICE = "controlplane.tasks.provision_service"


def send(task_name: str, *args) -> None:
    current_app.send_task(task_name, args=args)


def enqueue_after_commit(task_name: str, *args) -> None:
    transaction.on_commit(lambda: send(task_name, *args))
