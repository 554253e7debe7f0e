import os

from celery import Celery

from modelbay.core import broker  # noqa: F401  (registers the embedded broker's URL scheme)
from modelbay.core import redis_broker  # noqa: F401  (redis://: survives a broker restart)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelbay.settings")

app = Celery("modelbay")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
