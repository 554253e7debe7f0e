"""Writes for organizations, memberships and API keys."""

from datetime import datetime

from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from accounts import keys, verification
from accounts.choices import ALL_SCOPES, Role
from accounts.models import ApiKey, Membership, Organization, User
from modelbay.core import generation
from modelbay.core.errors import Forbidden


def _unique_org_slug(base: str) -> str:
    base = slugify(base)[:50] or "org"
    slug, n = base, 1
    while Organization.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


@transaction.atomic
def organization_create(*, name: str, owner: User, slug: str | None = None) -> Organization:
    """A new organization with ``owner`` as its owner. ``slug`` defaults to one made from the name."""
    organization = Organization.objects.create(name=name, slug=slug or _unique_org_slug(name))
    Membership.objects.create(user=owner, organization=organization, role=Role.OWNER)
    return organization


def personal_organization_create(*, user: User) -> Organization:
    """The organization every new user gets, named after their email address."""
    local_part = (user.email or user.username).split("@")[0]
    return organization_create(name=f"{local_part}'s models", owner=user, slug=_unique_org_slug(local_part))


def membership_add(*, organization: Organization, user: User, role: str = Role.MEMBER) -> Membership:
    membership, _ = Membership.objects.update_or_create(
        organization=organization, user=user, defaults={"role": role}
    )
    return membership


def api_key_create(
    *,
    organization: Organization,
    name: str,
    scopes: list[str] | None = None,
    expires_at: datetime | None = None,
    created_by: User | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; return it with the full key string, which is never shown again."""
    scopes = sorted(set(scopes or ALL_SCOPES))
    prefix, secret, full_key = keys.generate()
    api_key = ApiKey.objects.create(
        organization=organization,
        created_by=created_by,
        name=name,
        prefix=prefix,
        secret_hash=keys.hash_secret(secret),
        scopes=scopes,
        expires_at=expires_at,
    )
    return api_key, full_key


def api_key_revoke(*, api_key: ApiKey) -> None:
    """Revoke at once: every gateway process drops the key on its next call."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    generation.bump()


def api_key_touch(*, api_key_id: int, when: datetime) -> None:
    ApiKey.objects.filter(pk=api_key_id).update(last_used_at=when)


@transaction.atomic
def bootstrap_api_key(
    *, org_slug: str, email: str, scopes: list[str], name: str, force: bool = False
) -> tuple[ApiKey, str]:
    """The ``create_api_key`` command: user and organization are made when missing.

    An account that already exists with this email address is made an owner (of a new
    organization, or of an existing one it is not in) only when it has verified the
    address, or with ``force``: whoever signed up with an address they do not hold must
    not be handed an organization and its key. Its existing memberships are left as they are.
    """
    user = User.objects.filter(email__iexact=email).first()
    organization = Organization.objects.filter(slug=org_slug).first()
    if user is None:
        user = User.objects.create_user(username=email, email=email)
        user.set_unusable_password()
        user.save()
    elif not force and not verification.email_verified(user):
        member = organization is not None and Membership.objects.filter(user=user, organization=organization).exists()
        if not member:
            raise Forbidden(
                f"The account {user.email} exists and has not verified its email address: it is not made "
                f"an owner of '{org_slug}'. Let the person verify the address (or add them to the "
                "organization) first, or pass --force if you know they hold it."
            )
    if organization is None:
        organization = organization_create(name=org_slug, owner=user, slug=org_slug)
    else:
        Membership.objects.get_or_create(user=user, organization=organization, defaults={"role": Role.OWNER})
    return api_key_create(organization=organization, name=name, scopes=scopes, created_by=user)
