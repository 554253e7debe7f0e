"""The marketplace pages in real headless Chromium, against pytest-django's live server.

These tests do not enqueue provisioning, so the listed service has no model behind it
(test_browser_live.py calls a real one); they keep to pages, forms and what "Try it" sends.
"""

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from console.tests.helpers import XSS_DESCRIPTION
from inference.api import views  # the gateway views the console's calls reach
from marketplace import services as marketplace_services
from marketplace.models import Listing, Subscription

pytestmark = pytest.mark.browser

PASSWORD = "correct-horse-battery"
SCREENSHOT_DIR = Path("/tmp")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def _log_in(page, user):
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("navigation", name="Console")).to_be_visible()


def _nav(page, name):
    page.get_by_role("navigation", name="Console").get_by_role("link", name=name, exact=True).click()


def test_browse_search_open_an_app_and_subscribe_on_the_free_plan(page, outsider, outsider_organization, listing):
    _log_in(page, outsider)
    _nav(page, "Marketplace")

    apps = page.locator("#apps .app-card")
    expect(apps).to_have_count(1)
    expect(apps.first).to_contain_text("Digit reader")
    expect(apps.first).to_contain_text("by Acme")
    expect(apps.first.locator("[data-cheapest]")).to_have_text("free")
    page.get_by_role("searchbox", name="Search apps").fill("speech")
    page.get_by_role("button", name="Search").click()
    expect(page.locator(".empty")).to_contain_text("No app matches “speech”")
    page.get_by_role("searchbox", name="Search apps").fill("handwritten")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("navigation", name="Categories").get_by_role("link", name="vision").click()
    expect(page).to_have_url(re.compile(r"\?q=handwritten&category=vision$"))
    expect(apps).to_have_count(1)
    page.screenshot(path=SCREENSHOT_DIR / "console-marketplace.png", full_page=True)
    apps.first.click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Digit reader")
    expect(page.locator("#description h2")).to_have_text("How it works")
    expect(page.locator("#curl-example")).to_contain_text("/api/v1/apps/digit-reader/predict")
    expect(page.get_by_label("free")).to_be_checked()
    page.get_by_role("button", name="Subscribe").click()

    expect(page.locator(".flash")).to_contain_text("Subscribed to Digit reader on the free plan.")
    expect(page.locator("#subscription [data-current-plan]")).to_have_text("free")
    expect(page.locator("#subscription [data-used]")).to_have_text("0 / 1,000")
    page.screenshot(path=SCREENSHOT_DIR / "console-marketplace-app.png", full_page=True)
    subscription = Subscription.objects.get()
    assert (subscription.subscriber, subscription.plan.name, subscription.status) == (
        outsider_organization, "free", "active"
    )  # fmt: skip

    _nav(page, "Subscriptions")
    card = page.locator('[data-subscription="digit-reader"]')
    expect(card.locator("[data-used]")).to_have_text("0 / 1,000")
    expect(card.locator("[data-left]")).to_have_text("1,000")
    page.screenshot(path=SCREENSHOT_DIR / "console-subscriptions.png", full_page=True)


def test_changing_plan_and_cancelling_in_the_browser(page, outsider, listing):
    _log_in(page, outsider)
    page.goto(f"/marketplace/{listing.slug}/")
    page.get_by_role("button", name="Subscribe").click()
    expect(page.locator("#subscription")).to_be_visible()

    page.get_by_label("pro").check()
    page.locator("#plans").get_by_role("button", name="Change plan").click()

    expect(page.locator(".flash")).to_contain_text("Plan changed to the pro plan.")
    expect(page.locator("#subscription [data-used]")).to_have_text("0 / 100,000")
    assert Subscription.objects.get().plan.name == "pro"

    page.get_by_role("button", name="Cancel subscription").click()  # the confirm dialog is accepted

    expect(page.locator(".flash")).to_contain_text("cancelled")
    expect(page.locator("#subscription")).to_have_count(0)
    expect(page.locator("#plans").get_by_role("button", name="Subscribe")).to_be_visible()
    assert Subscription.objects.get().status == "cancelled"


def test_a_malicious_description_runs_no_script(page, outsider, listing):
    Listing.objects.filter(pk=listing.pk).update(description=XSS_DESCRIPTION)
    dialogs = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    _log_in(page, outsider)

    page.goto(f"/marketplace/{listing.slug}/")
    page.wait_for_load_state("load")
    description = page.locator("#description")
    expect(description).to_contain_text("<script>alert(1)</script>")  # shown as text
    expect(description).to_contain_text("<img src=x onerror=alert(1)>")
    for name in ("x", "y", "z"):
        link = description.get_by_text(name, exact=True)
        assert link.get_attribute("href") is None
        link.click()
    page.wait_for_timeout(500)

    assert dialogs == []
    assert page.url.endswith(f"/marketplace/{listing.slug}/")
    counts = page.evaluate(
        """() => ({
            scripts: document.querySelectorAll("#description script, #description iframe, #description svg").length,
            images: document.querySelectorAll("#description img").length,
            handlers: [...document.querySelectorAll("#description *")]
                .filter((el) => [...el.attributes].some((attr) => attr.name.startsWith("on"))).length,
        })"""
    )
    assert counts == {"scripts": 0, "images": 0, "handlers": 0}
    expect(description.get_by_role("link", name="docs")).to_have_attribute("href", "https://example.com/docs")


def test_try_it_answers_403_before_subscribing_and_sends_a_file_as_the_raw_body(
    page, outsider, listing, tmp_path, monkeypatch
):
    received = []
    read_body = views.request_body

    def recording_body(request):
        body = read_body(request)
        received.append((request.META.get("CONTENT_TYPE"), body))
        return body

    monkeypatch.setattr(views, "request_body", recording_body)  # the live server runs in this process
    _log_in(page, outsider)
    page.goto(f"/marketplace/{listing.slug}/")
    try_it = page.locator("#try-it")
    expect(page.locator("#try-body")).to_have_value('{"inputs": [[' + ", ".join(["0.0"] * 64) + "]]}")

    try_it.get_by_role("button", name="Send", exact=True).click()

    expect(page.locator("[data-try-status]")).to_contain_text("403")
    expect(page.locator("[data-try-output]")).to_contain_text('"code": "forbidden"')

    marketplace_services.subscribe(
        subscriber=outsider.memberships.get().organization, listing=listing, plan_name="free"
    )
    picture = tmp_path / "seven.png"
    picture.write_bytes(PNG)
    try_it.get_by_label("Or a file").set_input_files(picture)
    with page.expect_request(f"**/api/v1/apps/{listing.slug}/predict") as sent:
        try_it.get_by_role("button", name="Send file").click()

    assert sent.value.headers["x-csrftoken"]
    expect(page.locator("[data-try-status]")).not_to_contain_text("403")  # past the subscription check
    assert received[-1] == ("image/png", PNG)  # after the first call's JSON


def test_try_it_asks_for_a_file_before_sending_one(page, outsider, listing):
    _log_in(page, outsider)
    page.goto(f"/marketplace/{listing.slug}/")

    page.locator("#try-it").get_by_role("button", name="Send file").click()

    expect(page.locator("[data-try-status]")).to_have_text("Not sent")
    expect(page.locator("[data-try-output]")).to_have_text("Choose a file first.")


def test_publisher_lists_a_service_publishes_it_and_sees_it_in_the_marketplace(page, owner, service):
    _log_in(page, owner)
    _nav(page, "Publisher")
    form = page.locator("#create-listing")
    form.get_by_label("Service").select_option(label="Digits API")
    form.get_by_label("Title").fill("Digits")
    form.get_by_label("Slug").fill("digits")
    form.get_by_label("Summary").fill("Reads digits.")
    form.get_by_label("Description").fill("**Fast** digits")
    form.get_by_label("Category").fill("vision")
    form.get_by_label("Calls a month").fill("500")
    form.get_by_role("button", name="Create draft").click()

    expect(page.locator(".flash")).to_contain_text("Draft listing Digits created")
    expect(page.locator("h1 .badge")).to_have_text("draft")
    page.get_by_role("button", name="Publish").click()

    expect(page.locator("h1 .badge")).to_have_text("published")
    page.screenshot(path=SCREENSHOT_DIR / "console-publisher.png", full_page=True)
    _nav(page, "Marketplace")
    expect(page.locator('[data-app="digits"]')).to_contain_text("Reads digits.")
    listing = Listing.objects.get()
    assert (listing.status, listing.plans.get().monthly_quota) == ("published", 500)
