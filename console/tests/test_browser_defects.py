"""The console's contradictions of issue 14, each caught in real headless Chromium: a banner
beside a status it denies, server paths in errors, a logs card that missed its instance,
two addresses for one site, counts that disagree, ``null`` in empty boxes, a listing that
could not be edited, and icons that needed an emoji font."""

import re

import pytest
from django.db.models import Sum
from playwright.sync_api import expect

from conftest import wait_for
from console.tests.helpers import log_in, url
from controlplane.choices import InstanceStatus, ServiceStatus
from controlplane.models import Instance, Service
from demo.services import APPS, listing_fields
from inference import forwarding
from marketplace import services as marketplace_services
from marketplace.models import DailyUsage, ListingStatus

pytestmark = pytest.mark.browser


def test_the_provisioning_banner_does_not_outlive_provisioning(page, owner, model):
    log_in(page, owner)
    page.goto(url("model_detail", model.slug))
    page.locator("#deploy").get_by_label("Name").fill("Digits API")
    page.locator("#deploy").get_by_role("button", name="Deploy").click()
    expect(page.locator("#service-status .badge").first).to_have_text("provisioning")

    Service.objects.filter(slug="digits-api").update(status=ServiceStatus.READY)

    expect(page.locator("#service-status .badge").first).to_have_text("ready", timeout=10_000)
    expect(page.locator(".flash")).to_contain_text("Service Digits API created.")
    expect(page.locator("main")).not_to_contain_text(re.compile("provision", re.IGNORECASE))


def test_a_failed_deploy_says_what_is_wrong_without_server_paths(page, owner, service, settings):
    artifact = f"{settings.MODELBAY_ARTIFACT_ROOT}/ab/abcdef/model.onnx"
    Service.objects.filter(pk=service.pk).update(
        status=ServiceStatus.FAILED, error=f"Load model from {artifact} failed: Protobuf parsing failed."
    )
    Instance.objects.create(
        deployment=service.deployments.get(), zone="zone-a", status=InstanceStatus.FAILED,
        error=f'Traceback:\n  File "{settings.BASE_DIR}/runtime/loaders.py", line 12\nInvalidGraph: {artifact}',
    )  # fmt: skip
    log_in(page, owner)
    page.goto(url("service_detail", service.slug))

    status = page.locator("#service-status")
    expect(status.locator(".error-block pre")).to_have_text(
        "Load model from model.onnx failed: Protobuf parsing failed."
    )
    expect(status.locator("#instances")).to_contain_text('File "loaders.py", line 12')
    for server_path in (str(settings.MODELBAY_ARTIFACT_ROOT), str(settings.BASE_DIR), "/artifacts/"):
        expect(page.locator("main")).not_to_contain_text(server_path)


def test_the_logs_card_follows_the_instances_the_status_shows(page, owner, service):
    log_in(page, owner)
    page.goto(url("service_detail", service.slug))
    expect(page.locator("#logs")).to_contain_text("No instances yet.")

    instance = Instance.objects.create(
        deployment=service.deployments.get(), zone="zone-a", status=InstanceStatus.FAILED, error="exited with 1"
    )
    Service.objects.filter(pk=service.pk).update(status=ServiceStatus.FAILED, error="no instance could start")

    expect(page.locator("#service-status .badge").first).to_have_text("failed", timeout=10_000)
    expect(page.locator("#logs [data-log-instance]")).to_contain_text(f"{instance.id} · zone-a · failed")
    expect(page.locator("#logs")).not_to_contain_text("No instances yet")


def test_an_apps_page_names_one_address_for_the_site(page, owner, service, settings):
    """The OCR demo's description once showed curl on port 8000 beside the snippet's own port."""
    settings.SITE_URL = "http://127.0.0.1:8010"  # `make run` on another port
    ocr = next(app for app in APPS if app.slug == "text-ocr")
    listing = marketplace_services.listing_create(
        publisher=service.organization, service_slug=service.slug, plans=[PLAN], slug="text-ocr", **listing_fields(ocr)
    )
    marketplace_services.listing_set_status(listing=listing, status=ListingStatus.PUBLISHED)
    log_in(page, owner)
    page.goto(url("marketplace_app", listing.slug))

    expect(page.locator("#description")).to_contain_text("Call it from code")
    api_addresses = re.findall(r"https?://[^\s'\"]+?(?=/api/v1/)", page.locator("main").inner_text())
    assert api_addresses and set(api_addresses) == {settings.SITE_URL}
    page.goto(url("service_detail", service.slug))
    expect(page.locator("#curl-example")).to_contain_text(f"{settings.SITE_URL}/api/v1/services/{service.slug}/")


PLAN = {"name": "free", "monthly_quota": 1000, "rate_limit_per_s": 50, "price_per_1k": "0.00"}


def test_the_publisher_and_the_subscriber_count_the_same_calls(
    page, owner, outsider, outsider_organization, listing, monkeypatch
):
    """Two calls answered, one the app failed on, one it could not take: 2 on every page."""
    Instance.objects.create(
        deployment=listing.service.deployments.get(), zone="zone-a", status=InstanceStatus.READY, endpoint="http://x"
    )
    statuses = iter([200, 500, 200, 422])

    async def answer_in_turn(route, **call):
        return forwarding.Upstream(next(statuses), b'{"outputs": [{"label": 0}]}', "application/json", 1)

    monkeypatch.setattr(forwarding, "forward", answer_in_turn)
    marketplace_services.subscribe(subscriber=outsider_organization, listing=listing, plan_name="free")
    log_in(page, outsider)
    page.goto(url("marketplace_app", listing.slug))
    send = page.locator("#try-it").get_by_role("button", name="Send", exact=True)
    for expected in ("200", "502", "200", "422"):
        send.click()
        expect(page.locator("[data-try-status]")).to_contain_text(expected)
    wait_for(lambda: DailyUsage.objects.aggregate(n=Sum("calls"))["n"] == 2, what="the billed calls stored")

    page.goto(url("marketplace_app", listing.slug))
    expect(page.locator("#subscription [data-used]")).to_have_text("2 / 1,000")
    page.goto(url("subscription_list"))
    expect(page.locator('[data-subscription="digit-reader"] [data-used]')).to_have_text("2 / 1,000")
    expect(page.locator('[data-subscription="digit-reader"] [data-calls]')).to_have_text("2")
    page.context.clear_cookies()
    log_in(page, owner)
    page.goto(url("publisher_listing_list"))
    expect(page.locator('[data-listing="digit-reader"] [data-calls]')).to_have_text("2")
    page.goto(url("publisher_listing_detail", listing.slug))
    expect(page.locator("[data-calls]").first).to_have_text("2")
    expect(page.locator('#subscribers [data-organization="globex"] td').nth(1)).to_have_text("2")
    expect(page.locator('#plans [data-plan="free"] td').nth(3)).to_have_text("2")
    expect(page.locator("#daily [data-calls]")).to_have_text("2")
    expect(page.locator("#counting")).to_contain_text("Only successful calls are billed and counted here")
    page.goto(url("service_detail", listing.service.slug))  # the service's own figures say they differ
    expect(page.locator("#versions-counting")).to_have_text("Every call of the last 5 minutes, failed ones too")


def test_the_listing_forms_open_their_example_boxes_empty(page, owner, service):
    listing = marketplace_services.listing_create(
        publisher=service.organization, service_slug=service.slug, plans=[PLAN], slug="bare", title="Bare"
    )
    log_in(page, owner)
    for form_page in (url("publisher_listing_list"), url("publisher_listing_edit", listing.slug)):
        page.goto(form_page)
        for box in ("Example input", "Example output"):
            expect(page.get_by_label(box)).to_have_value("")


def test_editing_a_listing_keeps_its_subscribers_on_their_plan(page, owner, outsider, outsider_organization, listing):
    marketplace_services.subscribe(subscriber=outsider_organization, listing=listing, plan_name="free")
    log_in(page, owner)
    page.goto(url("publisher_listing_detail", listing.slug))
    page.get_by_role("link", name="Edit").click()

    form = page.locator("#edit-listing")
    form.get_by_label("Title").fill("Digit reader 2")
    form.get_by_label("Description").fill("## Faster\n\nNow in **half** the time.")
    form.get_by_label("Category").fill("handwriting")
    form.get_by_label("Example input").fill('{"inputs": [[1.0]]}')
    form.get_by_label("Icon").select_option(label="Handwriting")
    free = form.locator('[data-plan-form="free"]')
    free.get_by_label("Calls a month").fill("500")
    team = {"Plan name": "team", "Calls a month": "20000", "Calls a second": "20", "Price per 1,000 calls": "0.20"}
    for label, value in team.items():
        form.locator('[data-plan-form="new"]').get_by_label(label).fill(value)
    form.get_by_role("button", name="Save").click()

    expect(page.locator(".flash")).to_contain_text("Digit reader 2 saved.")
    expect(page.locator('#plans [data-plan="free"][data-retired]')).to_contain_text("retired")
    expect(page.locator('#plans [data-plan="team"]')).to_be_visible()

    page.context.clear_cookies()
    log_in(page, outsider)
    page.goto(url("marketplace_app", listing.slug))
    expect(page.get_by_role("heading", level=1)).to_have_text("Digit reader 2")
    expect(page.locator("#description h2")).to_have_text("Faster")
    expect(page.locator("#example-input")).to_have_text('{"inputs": [[1.0]]}')
    expect(page.locator(".app-icon img")).to_have_attribute("src", re.compile(r"/img/icons/pen-line\.svg$"))
    expect(page.locator("#subscription [data-quota]")).to_contain_text("1,000 a month")
    expect(page.locator("#subscription [data-plan-retired]")).to_be_visible()
    expect(page.locator('#plans [data-plan="free"]')).to_contain_text("500")
    expect(page.locator('#plans [data-plan="team"]')).to_be_visible()

    page.get_by_label("free").check()
    page.get_by_role("button", name="Change plan").click()
    expect(page.locator("#subscription [data-quota]")).to_contain_text("500 a month")
    expect(page.locator("#subscription [data-plan-retired]")).to_have_count(0)


def test_app_icons_are_vendored_svg_files(page, owner, listing):
    log_in(page, owner)
    for app_page in (url("marketplace"), url("marketplace_app", listing.slug), url("publisher_listing_list")):
        page.goto(app_page)
        icons = page.locator(".app-icon img")
        expect(icons.first).to_be_visible()
        for icon in icons.all():
            src = icon.get_attribute("src")
            assert re.fullmatch(r"/static/img/icons/[a-z-]+\.svg", src), src
            assert icon.evaluate("image => image.complete && image.naturalWidth > 0"), f"{src} did not load"
        assert not re.search(r"[\U0001F300-\U0001FAFF\u2600-\u27BF]", page.locator("main").inner_text())
