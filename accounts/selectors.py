"""Reads for organizations, memberships and API keys, always scoped."""

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from accounts.models import ApiKey, Membership, Organization, User


def organization_get(*, organization_id: int) -> Organization:
    return Organization.objects.get(pk=organization_id)


def organizations_for_user(*, user: User) -> QuerySet[Organization]:
    return Organization.objects.filter(memberships__user=user).order_by("name")


def membership_for(*, user: User, organization_id: int) -> Membership | None:
    return (
        Membership.objects.select_related("organization")
        .filter(user=user, organization_id=organization_id)
        .first()
    )


def api_key_list(*, organization_id: int) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(organization_id=organization_id, revoked_at__isnull=True)


def api_key_get(*, organization_id: int, key_id: int) -> ApiKey:
    return get_object_or_404(ApiKey, organization_id=organization_id, pk=key_id, revoked_at__isnull=True)


def api_key_by_prefix(*, prefix: str) -> ApiKey | None:
    return ApiKey.objects.select_related("organization").filter(prefix=prefix).first()
