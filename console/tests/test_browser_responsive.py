"""The console on a phone, in real headless Chromium: at 360 and 390 px wide no page scrolls
sideways, the side navigation waits behind the menu button, and the user menu is in reach."""

import re

import pytest
from playwright.sync_api import expect

from console.tests.helpers import log_in, url
from marketplace import services as marketplace_services

pytestmark = pytest.mark.browser

PHONE_WIDTHS = (360, 390)

# What sticks out past the right edge of the window, to say which element scrolls the page.
_WIDER_THAN_THE_WINDOW = """() => Array.from(document.querySelectorAll("body *"))
  .filter(element => element.getBoundingClientRect().right > window.innerWidth + 0.5)
  .filter(element => !element.closest(".table-wrap, .plans-wrap, pre, .sidenav"))
  .slice(0, 5).map(element => element.tagName.toLowerCase() + "." + element.className)"""


@pytest.fixture
def phone(browser, live_server, monkeypatch, request):
    """A tab the size of a phone (its width: the test's parameter)."""
    from controlplane import jobs

    monkeypatch.setattr(jobs, "send", lambda *args, **kwargs: None)
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": request.param, "height": 780}, is_mobile=True, has_touch=True
    )
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    yield tab
    context.close()


def _pages(listing, model) -> list[str]:
    return [
        url("home"),
        url("model_list"),
        url("model_detail", model.slug),
        url("service_list"),
        url("service_detail", listing.service.slug),
        url("service_create"),
        url("key_list"),
        url("organization_create"),
        url("marketplace"),
        url("marketplace_app", listing.slug),
        url("subscription_list"),
        url("publisher_listing_list"),
        url("publisher_listing_detail", listing.slug),
        url("publisher_listing_edit", listing.slug),
    ]


@pytest.mark.parametrize("phone", PHONE_WIDTHS, indirect=True)
def test_no_page_scrolls_sideways_on_a_phone(phone, owner, organization, listing):
    marketplace_services.subscribe(subscriber=organization, listing=listing, plan_name="free")
    _assert_fits(phone, "/accounts/login/")
    log_in(phone, owner)
    for path in _pages(listing, listing.service.model):
        _assert_fits(phone, path)


def _assert_fits(phone, path: str) -> None:
    phone.goto(path)
    sizes = phone.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert sizes[0] <= sizes[1], (
        f"{path} is {sizes[0]} px wide in {sizes[1]} px: {phone.evaluate(_WIDER_THAN_THE_WINDOW)}"
    )


@pytest.mark.parametrize("phone", PHONE_WIDTHS, indirect=True)
def test_the_navigation_opens_from_the_menu_button(phone, owner, organization):
    log_in(phone, owner)
    navigation = phone.get_by_role("navigation", name="Console")
    menu_button = phone.get_by_role("button", name="Menu")
    expect(navigation).to_be_hidden()

    menu_button.click()
    expect(menu_button).to_have_attribute("aria-expanded", "true")
    navigation.get_by_role("link", name="Marketplace").click()
    expect(phone.get_by_role("heading", level=1)).to_have_text("Marketplace")
    expect(navigation).to_be_hidden()
    menu_button.click()
    expect(navigation).to_be_visible()
    phone.keyboard.press("Escape")
    expect(navigation).to_be_hidden()


@pytest.mark.parametrize("phone", PHONE_WIDTHS, indirect=True)
def test_the_user_menu_is_in_reach_on_a_phone(phone, owner, organization):
    log_in(phone, owner)
    phone.locator(".user-menu summary").click()
    sign_out = phone.get_by_role("menuitem", name="Sign out")
    expect(sign_out).to_be_visible()
    box = sign_out.bounding_box()
    width = phone.viewport_size["width"]
    assert box["x"] >= 0 and box["x"] + box["width"] <= width, f"Sign out at {box} in {width} px"
    sign_out.click()
    expect(phone).to_have_url(re.compile(r"/accounts/login/"))
