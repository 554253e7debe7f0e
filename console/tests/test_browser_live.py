"""The console against a real worker and real runtimes: deploy, watch it become
ready, and call the model from the "Try it" box."""

import re

import pytest
from playwright.sync_api import expect

from conftest import wait_for
from controlplane import services
from controlplane.models import Service

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
