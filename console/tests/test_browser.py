"""The console in real headless Chromium, against pytest-django's live server.

Provisioning tasks are not enqueued here (no worker is needed): services stay
"provisioning" and have no ready instance, so predict calls answer 503.
"""

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from accounts import services as account_services
from accounts.models import ApiKey, Membership
from controlplane import releases, services
from controlplane.choices import InstanceStatus, ServiceStatus
from controlplane.models import Instance, Model, Service

pytestmark = pytest.mark.browser

PASSWORD = "correct-horse-battery"
SCREENSHOT_DIR = Path("/tmp")


def _log_in(page, user):
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("navigation", name="Console")).to_be_visible()


def _nav(page, name):
    page.get_by_role("navigation", name="Console").get_by_role("link", name=name).click()


def test_signing_up_lands_in_the_console_with_a_personal_organization(page):
    page.goto("/accounts/login/")
    page.get_by_role("link", name="Create an account").click()
    page.get_by_label("Email").fill("newcomer@example.com")
    page.get_by_label("Password", exact=True).fill("a-long-unusual-passphrase-42")
    page.get_by_label("Password (again)").fill("a-long-unusual-passphrase-42")
    page.get_by_role("button", name="Create account").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("newcomer's models")
    expect(page.locator("#org-switcher option:checked")).to_have_text("newcomer's models")
    membership = Membership.objects.get(user__email="newcomer@example.com")
    assert membership.role == "owner"


def test_owner_logs_in_and_uploads_a_model(page, owner, digits_model):
    _log_in(page, owner)
    _nav(page, "Models")
    page.get_by_label("Name").fill("Digits")
    page.get_by_label("Description").fill("Handwritten digits, 8x8 pixels")
    page.get_by_label("File").set_input_files(digits_model[0])
    page.get_by_role("button", name="Upload", exact=True).click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Digits")
    expect(page.locator("#versions tbody tr")).to_have_count(1)
    expect(page.locator("#versions")).to_contain_text("onnx")
    _nav(page, "Models")
    expect(page.locator("tbody tr")).to_contain_text("Digits")
    page.screenshot(path=SCREENSHOT_DIR / "console-models.png", full_page=True)
    assert Model.objects.get().organization.slug == "acme"


def test_a_bad_package_shows_its_error_in_the_form(page, owner, tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx model")
    _log_in(page, owner)
    page.goto("/models/")
    page.get_by_label("Name").fill("Broken")
    page.get_by_label("File").set_input_files(bad)
    page.get_by_role("button", name="Upload", exact=True).click()

    expect(page.locator(".field-error")).to_contain_text("not a valid ONNX model")
    assert not Model.objects.exists()


def test_deploying_shows_a_provisioning_service(page, owner, model):
    _log_in(page, owner)
    page.goto(f"/models/{model.slug}/")
    deploy = page.locator("#deploy")
    deploy.get_by_label("Name").fill("Digits API")
    deploy.get_by_label("Version").select_option("v1")
    deploy.get_by_label("Replicas").fill("2")
    deploy.get_by_role("button", name="Deploy").click()

    expect(page).to_have_url(re.compile(r"/services/digits-api/$"))
    expect(page.locator("#service-status .badge").first).to_have_text("provisioning")
    expect(page.locator("#curl-example")).to_contain_text("/api/v1/services/digits-api/predict")
    page.screenshot(path=SCREENSHOT_DIR / "console-service.png", full_page=True)
    assert Service.objects.get().replicas == 2


def test_try_it_shows_the_error_when_no_instance_is_ready(page, owner, service):
    _log_in(page, owner)
    page.goto(f"/services/{service.slug}/")
    page.locator("#try-it").get_by_role("button", name="Send").click()

    expect(page.locator("[data-try-status]")).to_contain_text("503")
    expect(page.locator("[data-try-output]")).to_contain_text('"code": "unavailable"')


def test_try_it_does_not_send_a_body_that_is_not_json(page, owner, service):
    _log_in(page, owner)
    page.goto(f"/services/{service.slug}/")
    page.locator("#try-body").fill('{"inputs": [1, 2')
    page.locator("#try-it").get_by_role("button", name="Send").click()

    expect(page.locator("[data-try-status]")).to_have_text("Not sent")
    expect(page.locator("[data-try-output]")).to_contain_text("not valid JSON")


def test_service_page_follows_the_status_while_provisioning(page, owner, service):
    _log_in(page, owner)
    page.goto(f"/services/{service.slug}/")
    expect(page.locator("#service-status")).to_have_attribute("data-polling", "on")

    Service.objects.filter(pk=service.pk).update(status=ServiceStatus.FAILED, error="model.onnx: cannot load")

    expect(page.locator("#service-status .badge").first).to_have_text("failed", timeout=10_000)
    expect(page.locator("#service-status pre")).to_have_text("model.onnx: cannot load")
    expect(page.locator("#service-status")).to_have_attribute("data-polling", "off")


def test_setting_a_traffic_split_shows_the_new_weights(page, owner, service, make_digits_upload):
    services.model_version_add(model=service.model, upload=make_digits_upload())
    services.version_deploy(service=service, version=2)
    for deployment in service.deployments.all():
        Instance.objects.create(deployment=deployment, zone="zone-a", status=InstanceStatus.READY, endpoint="http://x")
    Service.objects.filter(pk=service.pk).update(status=ServiceStatus.READY)
    _log_in(page, owner)
    page.goto(f"/services/{service.slug}/")
    expect(page.locator("#versions [data-version='2'] [data-weight]")).to_have_text("0%")

    traffic = page.locator("#traffic")
    traffic.get_by_label("v1").fill("40")
    traffic.get_by_label("v2").fill("60")
    traffic.get_by_role("button", name="Save split").click()

    expect(page.locator(".flash")).to_contain_text("Traffic of Digits API: v1 40%, v2 60%.")
    expect(page.locator("#versions [data-version='1'] [data-weight]")).to_have_text("40%")
    expect(page.locator("#versions [data-version='2'] [data-weight]")).to_have_text("60%")
    expect(traffic.get_by_label("v2")).to_have_value("60")
    page.screenshot(path=SCREENSHOT_DIR / "console-traffic.png", full_page=True)
    assert {d.model_version.version: d.weight for d in service.deployments.all()} == {1: 40, 2: 60}


def test_starting_a_release_shows_it_and_follows_its_steps(page, owner, service, make_digits_upload):
    services.model_version_add(model=service.model, upload=make_digits_upload())
    Instance.objects.create(
        deployment=service.deployments.get(), zone="zone-a", status=InstanceStatus.READY, endpoint="http://x"
    )
    Service.objects.filter(pk=service.pk).update(status=ServiceStatus.READY)
    _log_in(page, owner)
    page.goto(f"/services/{service.slug}/")

    form = page.locator("#start-release")
    form.get_by_label("Version").select_option("v2")
    expect(form.get_by_label("Steps")).to_have_value("10, 50, 100")
    form.get_by_label("Seconds per step").fill("30")
    form.get_by_role("button", name="Start release").click()

    expect(page.locator(".flash")).to_contain_text("Release of version 2 started")
    release_card = page.locator("#release")
    expect(release_card.locator(".badge")).to_have_text("starting")
    expect(page.locator("#release-timeline li").first).to_contain_text("started")
    expect(page.locator("#release-timeline li").first).to_contain_text("Bringing up version 2 beside version 1.")
    expect(page.locator("#service-status")).to_have_attribute("data-polling", "on")

    # Beat takes the first step: the page follows without a reload.
    release = service.releases.get()
    Instance.objects.create(
        deployment=service.deployments.get(model_version__version=2), zone="zone-a", status=InstanceStatus.READY,
        endpoint="http://x",
    )  # fmt: skip
    releases.advance(release.pk)
    expect(release_card.locator(".badge")).to_have_text("rolling", timeout=10_000)
    expect(release_card.locator("[data-release-weight]")).to_have_text("10%")
    expect(page.locator("#release-timeline li")).to_have_count(2)
    page.screenshot(path=SCREENSHOT_DIR / "console-release.png", full_page=True)
    assert release.interval_s == 30


def test_api_key_is_shown_once_and_revoking_removes_it(page, owner):
    _log_in(page, owner)
    _nav(page, "API keys")
    form = page.locator("#create-key")
    form.get_by_label("Name").fill("ci")
    form.get_by_label("Manage").uncheck()
    form.get_by_role("button", name="Create key").click()

    full_key = page.locator("#new-key").inner_text()
    api_key = ApiKey.objects.get(name="ci")
    assert full_key.startswith(f"mb_{api_key.prefix}_")
    assert api_key.scopes == ["predict"]
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()

    page.reload()
    expect(page).to_have_url(re.compile(r"/keys/$"))
    expect(page.locator("body")).not_to_contain_text(full_key)
    expect(page.locator("#keys")).to_contain_text("ci")
    page.locator("#keys").get_by_role("button", name="Revoke").click()

    expect(page.locator(".flash")).to_contain_text("Key ci revoked.")
    expect(page.locator("#keys")).to_have_count(0)
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None


def test_switching_organization_from_the_top_bar(page, owner):
    account_services.organization_create(name="Research Lab", owner=owner)
    _log_in(page, owner)

    page.locator("#org-switcher").select_option(label="Research Lab")

    expect(page.get_by_role("heading", level=1)).to_have_text("Research Lab")
    page.locator(".user-menu summary").click()
    page.get_by_role("menuitem", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
