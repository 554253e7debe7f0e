import json

from django.conf import settings
from django.core.management.base import BaseCommand

from controlplane.demo import demo_load


class Command(BaseCommand):
    help = "Load the demo organization, user, digits model and service (idempotent); prints them as JSON."

    def handle(self, *args, **options):
        self.stdout.write(json.dumps(demo_load(data_dir=settings.DATA_DIR)))
