from django.core.management.base import BaseCommand, CommandError

from accounts import services
from accounts.choices import ALL_SCOPES
from modelbay.core.errors import DomainError


class Command(BaseCommand):
    help = (
        "Create an API key (and the user and organization when missing); prints the key on the last line. "
        "A new email address gets a new user (no password) who owns the organization. An email address "
        "that belongs to an existing account is used only when that account has verified it, or is "
        "already a member of the organization (its role is left as it is); otherwise the command refuses, "
        "so that whoever signed up with an address they do not hold is never made an owner. --force "
        "overrides that when you know the person holds the address."
    )

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="organization slug")
        parser.add_argument("--email", required=True, help="the owner's email address")
        parser.add_argument("--scopes", default=",".join(ALL_SCOPES), help="comma-separated: manage,predict")
        parser.add_argument("--name", default="cli", help="a name for the key")
        parser.add_argument(
            "--force",
            action="store_true",
            help="make an existing account whose email address is not verified an owner all the same",
        )

    def handle(self, *args, org, email, scopes, name, force=False, **options):
        scope_list = [scope.strip() for scope in scopes.split(",") if scope.strip()]
        unknown = sorted(set(scope_list) - set(ALL_SCOPES))
        if unknown or not scope_list:
            raise CommandError(f"--scopes: choose from {', '.join(ALL_SCOPES)}")
        try:
            api_key, full_key = services.bootstrap_api_key(
                org_slug=org, email=email, scopes=scope_list, name=name, force=force
            )
        except DomainError as refusal:
            raise CommandError(refusal.detail) from None
        self.stderr.write(f"Created key '{api_key.name}' for organization '{org}' with scopes {api_key.scopes}.")
        self.stdout.write(full_key)
