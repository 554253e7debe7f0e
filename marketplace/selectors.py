"""Reads of the marketplace. Publishers see their own listings; anyone sees published
ones; a subscriber sees only its own subscriptions."""

from django.db.models import Q, QuerySet
from django.shortcuts import get_object_or_404

from marketplace.models import Listing, ListingStatus, Subscription, SubscriptionStatus


def published_listings(*, q: str = "", category: str = "") -> QuerySet[Listing]:
    listings = (
        Listing.objects.filter(status=ListingStatus.PUBLISHED).select_related("publisher").prefetch_related("plans")
    )
    if q:
        listings = listings.filter(Q(title__icontains=q) | Q(summary__icontains=q) | Q(description__icontains=q))
    if category:
        listings = listings.filter(category=category)
    return listings


def published_categories() -> list[str]:
    """The categories published apps are in."""
    published = Listing.objects.filter(status=ListingStatus.PUBLISHED).exclude(category="")
    return list(published.order_by("category").values_list("category", flat=True).distinct())


def published_listing_get(*, slug: str) -> Listing:
    return get_object_or_404(published_listings(), slug=slug)


def publisher_listings(*, organization_id: int) -> QuerySet[Listing]:
    return Listing.objects.filter(publisher_id=organization_id).select_related("service").prefetch_related("plans")


def publisher_listing_get(*, organization_id: int, slug: str) -> Listing:
    return get_object_or_404(publisher_listings(organization_id=organization_id), slug=slug)


def subscriptions(*, organization_id: int) -> QuerySet[Subscription]:
    return Subscription.objects.filter(subscriber_id=organization_id).select_related("listing", "plan")


def subscription_get(*, organization_id: int, subscription_id: int) -> Subscription:
    return get_object_or_404(subscriptions(organization_id=organization_id), pk=subscription_id)


def active_subscription(*, organization_id: int, listing: Listing) -> Subscription | None:
    """The organization's subscription to the listing that gives access now, if any."""
    return (
        subscriptions(organization_id=organization_id).filter(listing=listing, status=SubscriptionStatus.ACTIVE).first()
    )
