from django.core.management.base import BaseCommand, CommandError

from accounts import services
from accounts.choices import ALL_SCOPES


class Command(BaseCommand):
    help = "Create an API key (and the user and organization when missing); prints the key on the last line."

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="organization slug")
        parser.add_argument("--email", required=True, help="the owner's email address")
        parser.add_argument("--scopes", default=",".join(ALL_SCOPES), help="comma-separated: manage,predict")
        parser.add_argument("--name", default="cli", help="a name for the key")

    def handle(self, *args, org, email, scopes, name, **options):
        scope_list = [scope.strip() for scope in scopes.split(",") if scope.strip()]
        unknown = sorted(set(scope_list) - set(ALL_SCOPES))
        if unknown or not scope_list:
            raise CommandError(f"--scopes: choose from {', '.join(ALL_SCOPES)}")
        api_key, full_key = services.bootstrap_api_key(org_slug=org, email=email, scopes=scope_list, name=name)
        self.stderr.write(f"Created key '{api_key.name}' for organization '{org}' with scopes {api_key.scopes}.")
        self.stdout.write(full_key)
