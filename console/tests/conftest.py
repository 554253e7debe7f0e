"""Console fixtures: an owner / member / outsider trio with logged-in clients, the objects
of the owner's organization (a model, a service, one running two versions, an API key, a
marketplace app), and a headless browser. Shared helpers that are not fixtures: helpers.py."""

import io
import os
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from accounts import services as account_services
from accounts.choices import Role
from controlplane import services
from marketplace import services as marketplace_services
from marketplace.models import ListingStatus

PLANS = [
    {"name": "free", "monthly_quota": 1000, "rate_limit_per_s": 5, "price_per_1k": "0.00"},
    {"name": "pro", "monthly_quota": 100_000, "rate_limit_per_s": 50, "price_per_1k": "0.40"},
]


def _client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def member(organization, user_factory):
    """A user with the member role in the owner's organization."""
    user = user_factory()
    account_services.membership_add(organization=organization, user=user, role=Role.MEMBER)
    return user


@pytest.fixture
def outsider(outsider_organization):
    """The owner of another organization."""
    return outsider_organization.memberships.get().user


@pytest.fixture
def owner_client(owner):
    return _client_for(owner)


@pytest.fixture
def member_client(member):
    return _client_for(member)


@pytest.fixture
def outsider_client(outsider):
    return _client_for(outsider)


@pytest.fixture
def make_digits_upload(digits_model):
    """Fresh uploads of the digits ONNX file (an upload can be read only once)."""
    path, _ = digits_model
    return lambda: SimpleUploadedFile("digits.onnx", path.read_bytes(), content_type="application/octet-stream")


@pytest.fixture
def model(organization, make_digits_upload):
    """The digits model (version 1) in the owner's organization."""
    return services.model_create(organization=organization, name="Digits", upload=make_digits_upload())


@pytest.fixture
def service(model):
    """A service of the digits model; its provisioning task is never run in these tests."""
    return services.service_create(organization=model.organization, name="Digits API", model_slug=model.slug)


@pytest.fixture
def two_versions(service, make_digits_upload):
    """The service runs versions 1 (all the traffic) and 2 (none); no instance is ready."""
    services.model_version_add(model=service.model, upload=make_digits_upload())
    services.version_deploy(service=service, version=2)
    return service


@pytest.fixture
def api_key(organization):
    api_key, _ = account_services.api_key_create(organization=organization, name="ci", scopes=["predict"])
    return api_key


@pytest.fixture
def listing(service):
    """The owner's digits service as a published app with a free and a paid plan."""
    listing = marketplace_services.listing_create(
        publisher=service.organization,
        service_slug=service.slug,
        plans=PLANS,
        slug="digit-reader",
        title="Digit reader",
        summary="Reads a handwritten digit from an 8x8 image.",
        description="## How it works\n\nSend **64** grey levels, get the digit.",
        category="vision",
        icon="hash",
        example_input={"inputs": [[0.0] * 64]},
        example_output={"outputs": [{"label": 0}]},
    )
    return marketplace_services.listing_set_status(listing=listing, status=ListingStatus.PUBLISHED)


@pytest.fixture
def bad_package():
    """A zip whose manifest names a framework Modelbay does not serve."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("modelbay.yaml", "framework: tensorflow\n")
        archive.writestr("model.pb", b"\x00" * 16)
    return SimpleUploadedFile("model.zip", buffer.getvalue(), content_type="application/zip")


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium. Playwright's sync API keeps an event loop in this thread, so the
    ORM calls the tests make next to it are allowed explicitly; module-scoped, so that the
    loop is gone before tests that run their own."""
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE")
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, live_server, monkeypatch):
    """A browser tab on the live server; confirm dialogs are accepted, provisioning is not
    enqueued (services stay "provisioning" without a worker)."""
    from controlplane import jobs

    monkeypatch.setattr(jobs, "send", lambda *args, **kwargs: None)
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1360, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.on("dialog", lambda dialog: dialog.accept())
    yield page
    context.close()
