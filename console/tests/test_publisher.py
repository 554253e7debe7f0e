"""The publisher's dashboard: listings with their figures, listing a service, publishing and
unpublishing (console.views.publisher)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from accounts import services as account_services
from console.tests.helpers import store_usage, subscribe, url
from marketplace.models import Listing, Subscription

pytestmark = pytest.mark.django_db


@pytest.fixture
def subscribed(outsider_client, outsider_organization, listing):
    """Globex on the pro plan with calls on two days; Globex also holds an API key."""
    subscribe(outsider_client, listing, "pro")
    subscription = Subscription.objects.get()
    today = datetime.now(UTC).date()
    store_usage(subscription, "pro", today - timedelta(days=2), 2000)
    store_usage(subscription, "pro", today, 500)
    _, full_key = account_services.api_key_create(organization=outsider_organization, name="prod", scopes=["predict"])
    return subscription, full_key


def test_publisher_list_shows_status_subscribers_calls_and_revenue(owner_client, listing, subscribed):
    response = owner_client.get(url("publisher_listing_list"))

    html = response.content.decode()
    assert 'data-listing="digit-reader"' in html and 'data-status="published"' in html
    assert '<td class="num" data-subscribers>1</td>' in html
    assert '<td class="num" data-calls>2,500</td>' in html
    assert '<td class="num" data-revenue>1.00</td>' in html  # 2,500 calls at 0.40 per 1,000


def test_publisher_dashboard_shows_subscribers_plans_and_days(owner_client, listing, subscribed):
    response = owner_client.get(url("publisher_listing_detail", listing.slug))

    figures = response.context["figures"]
    assert (figures["calls"], figures["revenue"], figures["active_subscriptions"]) == (2500, Decimal("1.00"), 1)
    html = response.content.decode()
    assert '<tr data-organization="globex">' in html
    assert '<tr data-plan="pro">' in html and '<tr data-plan="free">' in html
    assert html.count("<tr data-day=") == 2
    assert 'action="/publisher/digit-reader/unpublish/"' in html


def test_publisher_dashboard_never_shows_subscriber_keys(owner_client, listing, subscribed):
    _, full_key = subscribed
    prefix = full_key.split("_")[1]

    for page in (url("publisher_listing_list"), url("publisher_listing_detail", listing.slug)):
        html = owner_client.get(page).content.decode()
        assert full_key not in html and prefix not in html


def test_another_organizations_publisher_dashboard_is_404(outsider_client, member_client, listing):
    assert outsider_client.get(url("publisher_listing_detail", listing.slug)).status_code == 404
    for name in ("publisher_listing_publish", "publisher_listing_unpublish"):
        assert outsider_client.post(url(name, listing.slug)).status_code == 404
    assert "digit-reader" not in outsider_client.get(url("publisher_listing_list")).content.decode()
    assert member_client.get(url("publisher_listing_detail", listing.slug)).status_code == 200
    assert Listing.objects.get().status == "published"


def test_unpublishing_and_publishing_again(owner_client, listing):
    response = owner_client.post(url("publisher_listing_unpublish", listing.slug))

    assert response.url == url("publisher_listing_detail", listing.slug)
    assert Listing.objects.get().status == "unpublished"
    assert owner_client.get(url("marketplace")).context["listings"].count() == 0

    owner_client.post(url("publisher_listing_publish", listing.slug))

    assert Listing.objects.get().status == "published"
    html = owner_client.get(url("publisher_listing_detail", listing.slug)).content.decode()
    assert "Digit reader is in the marketplace now." in html


def test_listing_a_service_creates_a_draft_with_one_plan(owner_client, organization, service):
    data = {
        "service": service.slug, "title": "Digits", "slug": "digits-app", "summary": "s", "description": "# D",
        "category": "vision", "icon": "hash", "example_input": '{"inputs": [[1, 2]]}', "example_output": "",
        "plan_name": "starter", "monthly_quota": 200, "rate_limit_per_s": 3, "price_per_1k": "0.25",
    }  # fmt: skip

    response = owner_client.post(url("publisher_listing_list"), data)

    assert response.status_code == 302 and response.url == url("publisher_listing_detail", "digits-app")
    listing = Listing.objects.get()
    assert (listing.publisher, listing.service, listing.status) == (organization, service, "draft")
    assert (listing.example_input, listing.example_output) == ({"inputs": [[1, 2]]}, None)
    plan = listing.plans.get()
    assert (plan.name, plan.monthly_quota, plan.rate_limit_per_s, plan.price_per_1k) == (
        "starter", 200, 3, Decimal("0.25")
    )  # fmt: skip
    assert plan.max_in_flight is None  # left blank: the platform's default


def test_the_listing_form_sets_the_calls_in_flight_per_subscriber(owner_client, service):
    data = {
        "service": service.slug, "title": "Digits", "slug": "digits-app", "plan_name": "starter",
        "monthly_quota": 200, "rate_limit_per_s": 3, "max_in_flight": 12, "price_per_1k": "0",
    }  # fmt: skip

    response = owner_client.post(url("publisher_listing_list"), data)

    assert response.status_code == 302, response.context["form"].errors
    assert Listing.objects.get().plans.get().max_in_flight == 12


def test_the_listing_form_shows_the_platforms_default_calls_in_flight(owner_client, service, settings):
    settings.MODELBAY_APP_MAX_IN_FLIGHT = 6

    html = owner_client.get(url("publisher_listing_list")).content.decode()

    assert 'Calls in flight per subscriber <span class="optional">optional</span>' in html
    assert 'name="max_in_flight"' in html and 'placeholder="6"' in html
    assert "blank: the platform's default, 6." in html


@pytest.mark.parametrize(
    "change, field",
    [
        ({"slug": "digit-reader"}, "slug"),  # taken
        ({"slug": "Not a slug"}, "slug"),
        ({"monthly_quota": 0}, "monthly_quota"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"max_in_flight": 1001}, "max_in_flight"),
        ({"max_in_flight": "many"}, "max_in_flight"),
        ({"example_input": "{not json"}, "example_input"),
        ({"service": "someone-elses"}, "service"),
    ],
)
def test_a_bad_listing_is_a_form_error(owner_client, listing, change, field):
    data = {
        "service": listing.service.slug, "title": "Again", "slug": "again", "plan_name": "free",
        "monthly_quota": 10, "rate_limit_per_s": 1, "price_per_1k": "0", **change,
    }  # fmt: skip

    response = owner_client.post(url("publisher_listing_list"), data)

    assert response.status_code == 400
    assert field in response.context["form"].errors, response.context["form"].errors
    assert Listing.objects.count() == 1


def test_only_the_organizations_own_services_can_be_listed(outsider_client, service):
    response = outsider_client.get(url("publisher_listing_list"))

    assert response.context["form"].fields["service"].choices == []
    assert "runs no service yet" in response.content.decode()
