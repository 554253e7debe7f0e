"""The subscriptions page: plans, periods and usage, cancelling (console.views.subscriptions)."""

from datetime import UTC, datetime, timedelta

import pytest

from console.tests.helpers import store_usage, subscribe, url
from marketplace import services as marketplace_services
from marketplace.models import ListingStatus, Subscription

pytestmark = pytest.mark.django_db


# --- cancelling --------------------------------------------------------------------------
def test_cancel_redirects_only_to_this_site(outsider_client, listing):
    subscribe(outsider_client, listing)
    subscription = Subscription.objects.get()

    response = outsider_client.post(url("subscription_cancel", subscription.pk), {"next": "https://evil.example/"})

    assert response.url == url("subscription_list")


# --- the subscriptions page --------------------------------------------------------------
def test_subscriptions_page_shows_plan_period_usage_and_calls_per_day(outsider_client, listing):
    subscribe(outsider_client, listing, "free")
    subscription = Subscription.objects.get()
    today = datetime.now(UTC).date()
    store_usage(subscription, "free", today - timedelta(days=1), 120)
    store_usage(subscription, "free", today, 30)

    response = outsider_client.get(url("subscription_list"))

    html = response.content.decode()
    assert 'data-subscription="digit-reader"' in html
    assert "data-used>150 / 1,000<" in html and "data-left>850<" in html
    assert subscription.period_start.strftime("%Y-%m-%d") in html
    assert subscription.period_end.strftime("%Y-%m-%d") in html
    assert f'<tr data-day="{today - timedelta(days=1):%Y-%m-%d}">' in html
    assert '<meter min="0" max="120" value="120"' in html and "<span data-calls>30</span>" in html


def test_a_subscriber_sees_only_its_own_subscriptions(owner_client, outsider_client, member_client, listing):
    subscribe(outsider_client, listing)
    subscription = Subscription.objects.get()

    assert 'data-subscription="digit-reader"' in outsider_client.get(url("subscription_list")).content.decode()
    for client in (owner_client, member_client):  # the publisher's organization subscribes to nothing
        response = client.get(url("subscription_list"))
        assert response.context["subscriptions"] == [] and response.context["ended"] == []
        assert client.post(url("subscription_cancel", subscription.pk)).status_code == 404
    subscription.refresh_from_db()
    assert subscription.status == "active"


def test_cancelled_subscriptions_are_listed_apart(outsider_client, listing):
    subscribe(outsider_client, listing)
    outsider_client.post(url("subscription_cancel", Subscription.objects.get().pk))

    response = outsider_client.get(url("subscription_list"))

    assert response.context["subscriptions"] == []
    assert [s.listing.slug for s in response.context["ended"]] == ["digit-reader"]
    assert 'id="ended"' in response.content.decode()


def test_an_unpublished_app_stays_on_its_subscribers_page_without_a_link(outsider_client, listing):
    subscribe(outsider_client, listing)
    marketplace_services.listing_set_status(listing=listing, status=ListingStatus.UNPUBLISHED)

    html = outsider_client.get(url("subscription_list")).content.decode()

    assert "took this app out of the marketplace" in html
    assert f'href="{url("marketplace_app", listing.slug)}"' not in html
