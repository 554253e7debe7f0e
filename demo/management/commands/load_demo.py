import json

from django.conf import settings
from django.core.management.base import BaseCommand

from accounts.models import User
from demo.services import demo_apps_load, demo_load


class Command(BaseCommand):
    help = (
        "Load the demo organization, user, digits model and service, and the marketplace's demo apps "
        "(idempotent); prints them as JSON."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--without-apps", action="store_true", help="Only the digits service, not the marketplace's apps."
        )

    def handle(self, *args, **options):
        demo = demo_load(data_dir=settings.DATA_DIR)
        if not options["without_apps"]:
            demo["apps"] = demo_apps_load(owner=User.objects.get(email=demo["email"]))
        self.stdout.write(json.dumps(demo))
