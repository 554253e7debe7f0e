"""An app's usage, live, in a real browser against the site as production serves it
(gunicorn with uvicorn workers, WebSockets on the Redis channel layer): a subscriber
watching its subscriptions page and the publisher watching the listing's page see the
counters move and the charts draw after real app calls (through the gateway, metered and
flushed by its processes), without reloading."""

import time

import httpx
import pytest
from django.test import Client
from playwright.sync_api import expect

from accounts import services as account_services
from conftest import _worker_env, wait_for
from controlplane.models import Service
from marketplace import services as marketplace_services
from tests.own_services import Gateway

pytestmark = [pytest.mark.browser, pytest.mark.integration]

SEEN_WITHIN_MS = 15_000  # the assertions' patience (a flush is about a second behind a call)


@pytest.fixture
def runtime(worker, listing):
    """The listed service's runtime (the digits model, on the local backend), ready."""
    wait_for(lambda: Service.objects.get(pk=listing.service_id).status == "ready", what="the service ready")


@pytest.fixture
def site(transactional_db, runtime, tmp_path):
    """The site as production serves it; one web process is enough here (and starts soonest)."""
    gateway = Gateway({**_worker_env(), "MODELBAY_USAGE_FLUSH_S": "0.25"}, tmp_path / "gateway.log", workers=1)
    try:
        yield gateway.start()
    finally:
        gateway.stop()


@pytest.fixture
def watch(browser, site):
    """Browser contexts of their own, each signed in as a user (a session made here, as
    signing in would): they only watch."""
    contexts = []

    def watcher(user):
        client = Client()
        client.force_login(user)
        context = browser.new_context(base_url=site, viewport={"width": 1360, "height": 900})
        context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": site}])
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(SEEN_WITHIN_MS)
        return page

    yield watcher
    for context in contexts:
        context.close()


def test_the_subscriber_and_the_publisher_see_the_calls_counted_and_charted_live(
    watch, site, owner, outsider, outsider_organization, listing
):
    marketplace_services.subscribe(subscriber=outsider_organization, listing=listing, plan_name="free")
    _, key = account_services.api_key_create(organization=outsider_organization, name="prod", scopes=["predict"])
    subscriber, publisher = watch(outsider), watch(owner)
    subscriber.goto("/subscriptions/")
    publisher.goto(f"/publisher/{listing.slug}/")
    usage = subscriber.locator(f"#usage-{listing.slug}")
    figures = publisher.locator("#listing-usage")
    for page in (subscriber, publisher):
        expect(page.locator("[data-live-state]")).to_have_text("Live")
        page.evaluate("window.notReloaded = true")
    expect(usage.locator("[data-used]")).to_have_text("0 / 1,000")
    expect(usage.locator("[data-chart-empty]")).to_have_text("No calls yet: the chart starts with the first one.")
    expect(figures.locator("[data-chart-empty]")).to_have_count(2)

    def call(times: int) -> None:
        for _ in range(times):
            response = httpx.post(
                f"{site}/api/v1/apps/{listing.slug}/predict",
                headers={"Authorization": f"Bearer {key}"},
                json={"inputs": [[0.0] * 64]},
            )
            assert response.status_code == 200, response.text

    called = time.monotonic()
    call(2)
    expect(usage.locator("[data-used]")).to_have_text("2 / 1,000", timeout=SEEN_WITHIN_MS)
    print(f"the calls on the subscriber's page {time.monotonic() - called:.2f} s after they were made")
    expect(usage.locator("[data-left]")).to_have_text("998", timeout=SEEN_WITHIN_MS)
    expect(figures.locator(".stat-value[data-calls]")).to_have_text("2", timeout=SEEN_WITHIN_MS)
    expect(figures.locator('[data-organization="globex"]')).to_contain_text("2", timeout=SEEN_WITHIN_MS)
    quota = usage.locator('[data-usage-chart="quota"]')
    expect(quota).to_have_attribute("data-last", "2", timeout=SEEN_WITHIN_MS)
    expect(quota.locator("canvas")).to_have_count(1)
    expect(quota.locator(".u-legend")).to_contain_text("calls so far")
    expect(quota.locator(".u-legend")).to_contain_text("quota")
    expect(quota.locator(".u-legend")).to_contain_text("1,000")  # the latest day's values, named
    for kind, legend in (("calls", "billed calls"), ("revenue", "revenue")):
        chart = figures.locator(f'[data-usage-chart="{kind}"]')
        expect(chart.locator("canvas")).to_have_count(1)
        expect(chart.locator(".u-legend")).to_contain_text(legend)
    expect(figures.locator('[data-usage-chart="calls"]')).to_have_attribute("data-last", "2", timeout=SEEN_WITHIN_MS)

    call(3)  # the same charts, drawn again
    expect(usage.locator("[data-used]")).to_have_text("5 / 1,000", timeout=SEEN_WITHIN_MS)
    expect(quota).to_have_attribute("data-last", "5", timeout=SEEN_WITHIN_MS)
    expect(figures.locator(".stat-value[data-calls]")).to_have_text("5", timeout=SEEN_WITHIN_MS)
    expect(figures.locator('[data-usage-chart="calls"]')).to_have_attribute("data-last", "5", timeout=SEEN_WITHIN_MS)
    for page in (subscriber, publisher):
        assert page.evaluate("window.notReloaded") is True
        expect(page.locator("[data-live-state]")).to_have_text("Live")
