"""The console against a real worker and real runtimes: deploy, watch it become
ready, and call the model from the "Try it" box; call it as a marketplace app too."""

import re

import pytest
from playwright.sync_api import expect

from conftest import wait_for
from controlplane import services
from controlplane.models import Service
from marketplace import services as marketplace_services
from marketplace.models import ListingStatus

pytestmark = [pytest.mark.browser, pytest.mark.integration]


@pytest.fixture
def live_page(browser, live_server, worker):
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def test_try_it_calls_the_deployed_model(live_page, owner, model):
    page = live_page
    services.service_create(organization=model.organization, name="Digits API", model_slug=model.slug)
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill(owner.email)
    page.get_by_label("Password").fill("correct-horse-battery")
    page.get_by_role("button", name="Sign in").click()
    page.goto("/services/digits-api/")

    # The status block follows the worker without a reload.
    expect(page.locator("#service-status .badge").first).to_have_text("ready", timeout=90_000)
    wait_for(lambda: Service.objects.get(slug="digits-api").status == "ready", what="service ready")
    page.locator("#try-it").get_by_role("button", name="Send").click()

    expect(page.locator("[data-try-status]")).to_contain_text("200")
    output = page.locator("[data-try-output]")
    expect(output).to_contain_text('"model_version": 1')
    assert re.search(r'"label": \d', output.inner_text())


def test_a_subscriber_calls_a_marketplace_app_from_try_it_and_sees_the_call_counted(
    live_page, outsider, outsider_organization, model
):
    page = live_page
    service = services.service_create(organization=model.organization, name="Digits API", model_slug=model.slug)
    plans = [{"name": "free", "monthly_quota": 1000, "rate_limit_per_s": 5, "price_per_1k": "0.00"}]
    listing = marketplace_services.listing_create(
        publisher=model.organization, service_slug=service.slug, plans=plans, slug="digit-reader", title="Digit reader"
    )
    marketplace_services.listing_set_status(listing=listing, status=ListingStatus.PUBLISHED)
    marketplace_services.subscribe(subscriber=outsider_organization, listing=listing, plan_name="free")
    wait_for(lambda: Service.objects.get(pk=service.pk).status == "ready", what="service ready")
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill(outsider.email)
    page.get_by_label("Password").fill("correct-horse-battery")
    page.get_by_role("button", name="Sign in").click()
    page.goto("/marketplace/digit-reader/")

    page.locator("#try-it").get_by_role("button", name="Send", exact=True).click()

    expect(page.locator("[data-try-status]")).to_contain_text("200")
    output = page.locator("[data-try-output]")
    expect(output).to_contain_text('"model_version": 1')
    assert re.search(r'"label": \d', output.inner_text())
    page.goto("/subscriptions/")
    expect(page.locator('[data-subscription="digit-reader"] [data-used]')).to_have_text("1 / 1,000")
