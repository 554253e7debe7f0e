"""Which service an app call reaches, and on which plan: the gateway's view of the
marketplace, kept in process memory like the routing tables (reloaded when the shared
generation token changes), so an app call makes no database query."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from marketplace import metering, selectors
from marketplace.models import Listing, ListingStatus
from marketplace.services import subscription_renew
from modelbay.core.errors import Forbidden, NotFound
from modelbay.core.generation import GenerationCache

# Existing subscribers keep calling an unpublished app; nobody new can subscribe.
_CALLABLE = (ListingStatus.PUBLISHED, ListingStatus.UNPUBLISHED)


@dataclass(frozen=True)
class AppAccess:
    publisher_id: int
    service_slug: str
    plan: metering.Plan | None  # None: this organization has no active subscription


def _load(organization_id: int, slug: str) -> AppAccess | None:
    listing = Listing.objects.filter(slug=slug, status__in=_CALLABLE).select_related("service").first()
    if listing is None:
        return None
    subscription = selectors.active_subscription(organization_id=organization_id, listing=listing)
    if subscription is None:
        return AppAccess(listing.publisher_id, listing.service.slug, None)
    plan = metering.Plan.of(subscription_renew(subscription=subscription))
    return AppAccess(listing.publisher_id, listing.service.slug, plan)


def _period_running(access: AppAccess) -> bool:
    return access.plan is None or access.plan.period_end > datetime.now(UTC)


# A missing app is asked for again on each call (as it may be published any moment).
_cache: GenerationCache[tuple[int, str], AppAccess] = GenerationCache(
    lambda key: _load(*key), keep_missing=False, still_good=_period_running
)


async def app_for(organization_id: int, slug: str, *, gen: str) -> AppAccess:
    """The app a subscriber calls; NotFound when there is no such app, Forbidden without a subscription."""
    access = await _cache.aget((organization_id, slug), gen=gen)
    if access is None:
        raise NotFound(f"No app '{slug}' in the marketplace.")
    if access.plan is None:
        raise Forbidden(f"This organization has no active subscription to the app '{slug}'.")
    return access
