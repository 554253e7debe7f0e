"""Writes of the marketplace: listings and their plans, subscriptions."""

import json
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Organization
from controlplane.models import Service
from marketplace.models import Listing, ListingStatus, Plan, Subscription, SubscriptionStatus
from modelbay.core import generation
from modelbay.core.errors import Conflict, InvalidRequest, NotFound

PERIOD = timedelta(days=30)


def listing_create(*, publisher: Organization, service_slug: str, plans: list[dict], **fields) -> Listing:
    """A draft listing of one of the publisher's services, with at least one plan."""
    service = Service.objects.filter(organization=publisher, slug=service_slug, deleted_at__isnull=True).first()
    if service is None:
        raise InvalidRequest(f"No service '{service_slug}' in this organization.", field="service")
    _check_listing(plans, fields)
    try:
        with transaction.atomic():
            listing = Listing.objects.create(publisher=publisher, service=service, **fields)
            Plan.objects.bulk_create(Plan(listing=listing, **plan) for plan in plans)
    except IntegrityError:
        raise Conflict(f"The listing slug '{fields['slug']}' is taken.") from None
    return listing


# What editing a listing may change besides its plans.
LISTING_PAGE_FIELDS = frozenset(
    {"title", "summary", "description", "category", "icon", "example_input", "example_output"}
)


def listing_update(*, listing: Listing, plans: list[dict] | None = None, **fields) -> Listing:
    """Change a listing's page (title, description, category, examples, ...) and its plans.

    ``plans`` are the plans offered from now on, by name (None: as they are). A plan whose
    terms change, or that is left out, is retired rather than changed when subscriptions or
    billed calls refer to it: its subscribers keep its terms (and their calls its price)
    until they pick another plan; a plan nobody used is changed or deleted in place."""
    unknown = set(fields) - LISTING_PAGE_FIELDS
    if unknown:  # its slug, service, publisher and status are not a page's to change
        raise TypeError(f"listing_update() cannot change {sorted(unknown)}")
    _check_listing(plans, fields)
    with transaction.atomic():
        for name, value in fields.items():
            setattr(listing, name, value)
        listing.save()
        if plans is not None:
            _plans_replace(listing, plans)
    generation.bump()  # gateways reload the apps and their plans
    return listing


def _plans_replace(listing: Listing, plans: list[dict]) -> None:
    offered = {plan.name: plan for plan in listing.plans.select_for_update().filter(retired_at__isnull=True)}
    for terms in plans:
        current = offered.pop(terms["name"], None)
        if current is not None and _same_terms(current, terms):
            continue
        if current is not None:
            _plan_withdraw(current)
        Plan.objects.create(listing=listing, **terms)
    for dropped in offered.values():
        _plan_withdraw(dropped)


def _check_listing(plans: list[dict] | None, fields: dict) -> None:
    """``plans`` None: left as they are."""
    if plans is not None and not plans:
        raise InvalidRequest("A listing needs at least one plan.", field="plans")
    names = [plan["name"] for plan in plans or []]
    if len(set(names)) != len(names):
        raise InvalidRequest("Plan names must differ.", field="plans")
    for name in ("example_input", "example_output"):
        _check_example_size(fields.get(name), name)


def _same_terms(plan: Plan, terms: dict) -> bool:
    return all(getattr(plan, name) == value for name, value in terms.items())


def _plan_withdraw(plan: Plan) -> None:
    """Take a plan off the offer: retired while anything refers to it, else deleted."""
    if plan.subscriptions.exists() or plan.daily_usage.exists():
        plan.retired_at = timezone.now()
        plan.save(update_fields=["retired_at"])
    else:
        plan.delete()


# A listing's examples are shown on its page and stored with it: a sample, not a data set.
MAX_EXAMPLE_BYTES = 64 * 1024


def _check_example_size(example, field: str) -> None:
    if example is not None and len(json.dumps(example)) > MAX_EXAMPLE_BYTES:
        raise InvalidRequest(f"An example may take at most {MAX_EXAMPLE_BYTES // 1024} KiB as JSON.", field=field)


def listing_set_status(*, listing: Listing, status: str) -> Listing:
    listing.status = status
    listing.save(update_fields=["status", "updated_at"])
    generation.bump()  # gateways reload who may call the app
    return listing


def subscribe(*, subscriber: Organization, listing: Listing, plan_name: str) -> Subscription:
    """Subscribe to a published listing on one of its plans; subscribing again changes the plan.

    A new subscription after a cancelled one keeps the cancelled one's period while that
    period runs, so the calls made in it still count toward the quota."""
    if listing.status != ListingStatus.PUBLISHED:
        raise NotFound(f"No app '{listing.slug}' in the marketplace.")
    plan = listing.plans.filter(name=plan_name, retired_at__isnull=True).first()
    if plan is None:
        raise InvalidRequest(f"The app has no plan '{plan_name}'.", field="plan")
    with transaction.atomic():
        current = (
            Subscription.objects.select_for_update()
            .filter(subscriber=subscriber, listing=listing, status=SubscriptionStatus.ACTIVE)
            .first()
        )
        generation.bump()  # gateways reload the plan, so a change takes effect at once
        if current is not None:  # a change of plan, in the same period and its usage so far
            current.plan = plan
            current.save(update_fields=["plan"])
            return current
        now = timezone.now()
        period_start, period_end = now, now + PERIOD
        # The quota counts per organization, listing and period: subscribing again after a
        # cancel goes on in the period still running, with the calls already made in it.
        previous = (
            Subscription.objects.filter(subscriber=subscriber, listing=listing, period_end__gt=now)
            .order_by("-period_end")
            .first()
        )
        if previous is not None and previous.period_start <= now:
            period_start, period_end = previous.period_start, previous.period_end
        return Subscription.objects.create(
            subscriber=subscriber, listing=listing, plan=plan, period_start=period_start, period_end=period_end
        )


def subscription_cancel(*, subscription: Subscription) -> None:
    """Access ends at once."""
    Subscription.objects.filter(pk=subscription.pk).update(
        status=SubscriptionStatus.CANCELLED, cancelled_at=timezone.now()
    )
    generation.bump()


def subscription_renew(*, subscription: Subscription) -> Subscription:
    """The subscription in the period that holds now: once a period has ended the next one
    starts (its quota afresh) on the first call or read that finds it ended."""
    if subscription.status != SubscriptionStatus.ACTIVE or subscription.period_end > timezone.now():
        return subscription
    with transaction.atomic():
        subscription = (
            Subscription.objects.select_for_update(of=("self",)).select_related("plan").get(pk=subscription.pk)
        )
        now = timezone.now()
        if subscription.period_end <= now:
            periods_passed = (now - subscription.period_start) // PERIOD
            subscription.period_start += periods_passed * PERIOD
            subscription.period_end = subscription.period_start + PERIOD
            subscription.save(update_fields=["period_start", "period_end"])
    return subscription
