"""Editing a listing (``listing_update``): its page changes at once; a plan's terms never
change under its subscribers, who keep the old terms until they pick another plan."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from controlplane import services as controlplane_services
from marketplace import services, usage
from marketplace.models import DailyUsage, Plan
from modelbay.core.errors import InvalidRequest

pytestmark = pytest.mark.django_db

FREE = {"name": "free", "monthly_quota": 1000, "rate_limit_per_s": 5, "max_in_flight": None, "price_per_1k": Decimal(0)}
PRO = {**FREE, "name": "pro", "monthly_quota": 100_000, "price_per_1k": Decimal("0.40")}


@pytest.fixture
def listing(organization, digits_upload):
    controlplane_services.model_create(organization=organization, name="digits", upload=digits_upload)
    controlplane_services.service_create(organization=organization, name="digits", model_slug="digits")
    listing = services.listing_create(
        publisher=organization, service_slug="digits", plans=[FREE, PRO], slug="digit-reader", title="Digits"
    )
    return services.listing_set_status(listing=listing, status="published")


def _offered(listing) -> dict[str, int]:
    return {plan.name: plan.monthly_quota for plan in listing.plans.filter(retired_at__isnull=True)}


def test_the_page_and_an_unused_plan_change_in_place(listing):
    free = listing.plans.get(name="free")

    services.listing_update(
        listing=listing, plans=[{**FREE, "monthly_quota": 500}, PRO], title="Digits 2", example_input={"inputs": [1]}
    )

    listing.refresh_from_db()
    assert (listing.title, listing.example_input) == ("Digits 2", {"inputs": [1]})
    assert _offered(listing) == {"free": 500, "pro": 100_000}
    assert not listing.plans.filter(retired_at__isnull=False).exists()
    assert not Plan.objects.filter(pk=free.pk).exists()  # nobody used it: replaced, not kept


def test_a_subscriber_keeps_the_terms_of_a_plan_changed_under_it(listing, outsider_organization):
    subscription = services.subscribe(subscriber=outsider_organization, listing=listing, plan_name="free")

    services.listing_update(listing=listing, plans=[{**FREE, "monthly_quota": 500}, PRO])

    subscription.refresh_from_db()
    assert (subscription.plan.name, subscription.plan.monthly_quota) == ("free", 1000)
    assert subscription.plan.retired_at is not None
    assert _offered(listing) == {"free": 500, "pro": 100_000}
    changed = services.subscribe(subscriber=outsider_organization, listing=listing, plan_name="free")
    assert (changed.pk, changed.plan.monthly_quota) == (subscription.pk, 500)


def test_a_dropped_plan_is_retired_while_used_and_deleted_when_not(listing, outsider_organization):
    services.subscribe(subscriber=outsider_organization, listing=listing, plan_name="pro")

    services.listing_update(listing=listing, plans=[FREE, {**PRO, "name": "team"}])
    services.listing_update(listing=listing, plans=[FREE])

    assert _offered(listing) == {"free": 1000}
    assert list(listing.plans.filter(retired_at__isnull=False).values_list("name", flat=True)) == ["pro"]
    with pytest.raises(InvalidRequest):
        services.subscribe(subscriber=outsider_organization, listing=listing, plan_name="pro")


def test_a_retired_plan_keeps_its_calls_and_revenue_apart(listing, outsider_organization):
    subscription = services.subscribe(subscriber=outsider_organization, listing=listing, plan_name="pro")
    DailyUsage.objects.create(
        subscription=subscription, plan=subscription.plan, period_start=subscription.period_start,
        day=datetime.now(UTC).date(), calls=1000,
    )  # fmt: skip

    services.listing_update(listing=listing, plans=[FREE, {**PRO, "price_per_1k": Decimal("0.80")}])

    figures = usage.listing_usage(listing)["plans"]
    assert [(p["plan"], p["retired"], p["price_per_1k"], p["calls"], p["revenue"]) for p in figures] == [
        ("free", False, Decimal(0), 0, Decimal(0)),
        ("pro", False, Decimal("0.80"), 0, Decimal(0)),
        ("pro", True, Decimal("0.40"), 1000, Decimal("0.40")),
    ]


def test_a_listing_keeps_at_least_one_plan_with_distinct_names(listing):
    with pytest.raises(InvalidRequest):
        services.listing_update(listing=listing, plans=[])
    with pytest.raises(InvalidRequest):
        services.listing_update(listing=listing, plans=[FREE, FREE])
    assert _offered(listing) == {"free": 1000, "pro": 100_000}
