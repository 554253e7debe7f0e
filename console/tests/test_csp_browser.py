"""The console under its Content-Security-Policy in real headless Chromium: the pages load
their script and styles, their scripts work, and Chromium reports no violation."""

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

PASSWORD = "correct-horse-battery"


@pytest.fixture
def violations(page):
    """What Chromium reports as blocked by the page's policy, page by page."""
    seen = []
    page.on("console", lambda message: "Content Security Policy" in message.text and seen.append(message.text))
    return seen


def _log_in(page, user):
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("navigation", name="Console")).to_be_visible()


def test_console_pages_run_under_the_policy(page, violations, owner, service, listing):
    page.goto("/accounts/login/")
    response = page.request.get("/accounts/login/")
    assert "script-src 'self';" in response.headers["content-security-policy"]

    _log_in(page, owner)
    # console.js runs: "Try it" sends with fetch and shows the answer.
    page.goto(f"/services/{service.slug}/")
    page.locator("#try-it").get_by_role("button", name="Send").click()
    expect(page.locator("[data-try-status]")).to_contain_text(re.compile(r"\d{3}"))

    pages = ["/", "/models/", f"/models/{service.model.slug}/", "/deploy/", "/services/", "/keys/"]
    pages += ["/marketplace/", f"/marketplace/{listing.slug}/", "/subscriptions/", "/publisher/"]
    for path in [*pages, f"/publisher/{listing.slug}/", "/keys/"]:  # ends on a page that polls nothing
        page.goto(path)
        expect(page.get_by_role("navigation", name="Console")).to_be_visible()

    assert violations == []


def test_a_blocked_inline_script_would_be_seen(page, violations, live_server):
    """The check above can fail: an inline script on a page of ours is reported."""
    page.goto("/accounts/login/")
    page.evaluate("""() => { const s = document.createElement("script"); s.textContent = "window.ran = 1";
                             document.head.appendChild(s); }""")

    assert page.evaluate("() => window.ran") is None
    page.wait_for_timeout(200)
    assert any("inline script" in text or "script-src" in text for text in violations), violations
