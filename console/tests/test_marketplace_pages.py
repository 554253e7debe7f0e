"""The marketplace pages of the console: browsing, an app's page and subscribing to it;
descriptions safe (console.views.marketplace_pages). The subscriptions page and the
publisher's dashboard are in test_subscriptions.py and test_publisher.py."""

from html.parser import HTMLParser

import pytest
from django.urls import reverse

from console.tests.helpers import XSS_DESCRIPTION, subscribe, url
from controlplane import services as controlplane_services
from marketplace import services as marketplace_services
from marketplace.markdown import render_markdown
from marketplace.models import Listing, ListingStatus, Subscription

pytestmark = pytest.mark.django_db


class _Tags(HTMLParser):
    """Every start tag of a page with its attributes, and the text inside script tags."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.script_text = ""
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.script_text += data


def _tags(html: str) -> _Tags:
    parser = _Tags()
    parser.feed(html)
    return parser


def _assert_nothing_runs(html: str) -> None:
    """No inline script, no event attribute, no javascript:/data: URL, no frame or svg."""
    page = _tags(html)
    assert page.script_text.strip() == ""
    for tag, attrs in page.tags:
        assert tag not in {"iframe", "svg", "object", "embed", "style"}, (tag, attrs)
        if tag in {"script", "img"}:
            assert attrs["src"].startswith("/static/"), attrs
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, attrs)
            if name in {"href", "src", "action", "formaction"}:
                assert not (value or "").strip().lower().startswith(("javascript:", "data:", "vbscript:")), (tag, attrs)


# --- access ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["marketplace", "subscription_list", "publisher_listing_list"])
def test_anonymous_visitor_is_sent_to_login(client, name):
    response = client.get(url(name))

    assert response.status_code == 302
    assert response.url.startswith(reverse("account_login"))


def test_every_marketplace_page_renders_for_the_publisher_and_a_subscriber(owner_client, outsider_client, listing):
    subscribe(outsider_client, listing)
    for client in (owner_client, outsider_client):
        for page in (url("marketplace"), url("marketplace_app", listing.slug), url("subscription_list")):
            assert client.get(page).status_code == 200, page
    for page in (url("publisher_listing_list"), url("publisher_listing_detail", listing.slug)):
        assert owner_client.get(page).status_code == 200, page


def test_the_navigation_links_the_marketplace_pages(owner_client):
    html = owner_client.get(url("subscription_list")).content.decode()

    for name in ("marketplace", "subscription_list", "publisher_listing_list"):
        assert f'href="{url(name)}"' in html
    assert f'<a href="{url("subscription_list")}" class="active" aria-current="page">Subscriptions</a>' in html


def test_mutating_views_refuse_get(owner_client, outsider_client, listing):
    subscribe(outsider_client, listing)
    subscription = Subscription.objects.get()
    assert outsider_client.get(url("marketplace_subscribe", listing.slug)).status_code == 405
    assert outsider_client.get(url("subscription_cancel", subscription.pk)).status_code == 405
    assert owner_client.get(url("publisher_listing_publish", listing.slug)).status_code == 405
    assert owner_client.get(url("publisher_listing_unpublish", listing.slug)).status_code == 405


# --- browsing ----------------------------------------------------------------------------
@pytest.fixture
def second_listing(outsider_organization, digits_upload):
    """Another organization's app, in another category, with a paid plan only."""
    model = controlplane_services.model_create(organization=outsider_organization, name="Words", upload=digits_upload)
    service = controlplane_services.service_create(
        organization=outsider_organization, name="Words API", model_slug=model.slug
    )
    listing = marketplace_services.listing_create(
        publisher=outsider_organization,
        service_slug=service.slug,
        plans=[{"name": "basic", "monthly_quota": 500, "rate_limit_per_s": 2, "price_per_1k": "1.25"}],
        slug="sentiment",
        title="Sentiment",
        summary="Tells whether a sentence is positive.",
        category="text",
        icon="message-square",
    )
    return marketplace_services.listing_set_status(listing=listing, status=ListingStatus.PUBLISHED)


def test_marketplace_shows_published_apps_with_publisher_and_cheapest_plan(owner_client, listing, second_listing):
    Listing.objects.create(
        publisher=listing.publisher, service=listing.service, slug="secret-draft", title="Secret draft"
    )

    response = owner_client.get(url("marketplace"))

    html = response.content.decode()
    assert [entry.slug for entry in response.context["listings"]] == ["digit-reader", "sentiment"]
    assert "Secret draft" not in html
    assert "by Acme" in html and "by Globex" in html
    assert 'From <span class="strong" data-cheapest>free</span>' in html
    assert 'From <span class="strong" data-cheapest>1.25 / 1k calls</span>' in html
    assert "img/icons/hash.svg" in html and "Reads a handwritten digit" in html
    assert response.context["categories"] == ["text", "vision"]


def test_marketplace_search_and_category_filter(owner_client, listing, second_listing):
    def slugs(**query):
        return [entry.slug for entry in owner_client.get(url("marketplace"), query).context["listings"]]

    assert slugs(q="handwritten") == ["digit-reader"]
    assert slugs(q="positive") == ["sentiment"]
    assert slugs(q="speech") == []
    assert slugs(category="text") == ["sentiment"]
    assert slugs(q="digit", category="text") == []
    assert slugs(category="not a slug!") == ["digit-reader", "sentiment"]  # a bad filter shows everything
    html = owner_client.get(url("marketplace"), {"q": "digit", "category": "vision"}).content.decode()
    assert 'href="?q=digit&amp;category=text"' in html  # the chips keep the search
    assert 'class="chip active" aria-current="page">vision</a>' in html
    assert "No app matches" in owner_client.get(url("marketplace"), {"q": "speech"}).content.decode()


def test_drafts_and_unpublished_apps_have_no_page(owner_client, listing):
    marketplace_services.listing_set_status(listing=listing, status=ListingStatus.UNPUBLISHED)

    assert owner_client.get(url("marketplace_app", listing.slug)).status_code == 404
    assert owner_client.get(url("marketplace_app", "nope")).status_code == 404
    assert owner_client.post(url("marketplace_subscribe", listing.slug), {"plan": "free"}).status_code == 404


# --- an app's page -----------------------------------------------------------------------
def test_app_page_shows_description_plans_example_and_code(outsider_client, listing, settings):
    settings.SITE_URL = "https://models.example.com"

    response = outsider_client.get(url("marketplace_app", listing.slug))

    html = response.content.decode()
    assert "<h2>How it works</h2>" in html and "<strong>64</strong>" in html
    assert [plan.name for plan in response.context["plans"]] == ["free", "pro"]
    assert 'data-plan="pro"' in html and '<td class="num nowrap" data-price>0.40</td>' in html and "100,000" in html
    assert 'id="plan-free" value="free" checked' in html  # the cheapest, preselected
    assert "&quot;outputs&quot;: [\n" in html  # the example output, pretty
    endpoint = "https://models.example.com/api/v1/apps/digit-reader/predict"
    assert f"curl -X POST {endpoint}" in html
    assert f'"{endpoint}",' in html and "import requests" in html
    assert "-d &#x27;{&quot;inputs&quot;: [[0.0, 0.0," in html
    assert f'href="{url("key_list")}"' in html
    assert f'action="{reverse("api-app-predict", args=[listing.slug])}"' in html
    assert 'id="try-file"' in html and "Subscribe first" in html


def test_app_page_shows_each_plans_calls_in_flight_or_the_platforms_default(outsider_client, listing, settings):
    settings.MODELBAY_APP_MAX_IN_FLIGHT = 8
    listing.plans.filter(name="pro").update(max_in_flight=1)

    html = outsider_client.get(url("marketplace_app", listing.slug)).content.decode()

    rows = {name: html.split(f'data-plan="{name}"')[1].split("</tr>")[0] for name in ("free", "pro")}
    assert '<div class="muted small" data-in-flight>up to 8 calls at once</div>' in rows["free"]
    assert '<div class="muted small" data-in-flight>up to 1 call at once</div>' in rows["pro"]


def test_an_app_without_example_gets_one_made_for_its_model(outsider_client, listing):
    Listing.objects.filter(pk=listing.pk).update(example_input=None, example_output=None)

    response = outsider_client.get(url("marketplace_app", listing.slug))

    assert response.context["example"] == '{"inputs": [[' + ", ".join(["0.0"] * 64) + "]]}"
    assert 'id="examples"' not in response.content.decode()


def test_description_markdown_cannot_inject_script(outsider_client, listing):
    Listing.objects.filter(pk=listing.pk).update(description=XSS_DESCRIPTION)

    html = outsider_client.get(url("marketplace_app", listing.slug)).content.decode()

    _assert_nothing_runs(html)
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "onerror=alert(1)" not in html.replace("&lt;img src=x onerror=alert(1)&gt;", "")
    assert '<a href="https://example.com/docs" rel="nofollow noopener noreferrer">docs</a>' in html
    assert "<code>code &lt;b&gt;</code>" in html


@pytest.mark.parametrize(
    "text",
    [
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "[x](javascript:alert(1))",
        "[x](java\nscript:alert(1))",
        "[x](&#x6A;avascript:alert(1))",
        "<div onclick=alert(1)>x</div>",
        "<a href='javascript:alert(1)'>x</a>",
        '[x](https://example.com "a" onclick="alert(1)")',
        "[x](<javascript:alert(1)>)",
        "<javascript:alert(1)>",
        "`<script>` ```\n<script>alert(1)</script>\n```",
        "<<script>script>alert(1)<</script>/script>",
        "<!--<script>alert(1)</script>-->",
    ],
)
def test_render_markdown_keeps_no_executable_html(text):
    html = str(render_markdown(text))

    _assert_nothing_runs(html)
    assert "<script" not in html.lower()


def test_render_markdown_keeps_ordinary_formatting():
    html = render_markdown("# T\n\n- a\n- *b*\n\n| x | y |\n|---|---|\n| 1 | 2 |\n\n> q\n\n[m](mailto:a@example.com)")

    for fragment in ("<h1>T</h1>", "<li><em>b</em></li>", "<td>1</td>", "<blockquote>", 'href="mailto:a@example.com"'):
        assert fragment in html, fragment
    assert render_markdown("") == ""


# --- subscribing -------------------------------------------------------------------------
def test_subscribing_changing_plan_and_cancelling_from_the_app_page(outsider_client, outsider_organization, listing):
    app_page = url("marketplace_app", listing.slug)
    predict = reverse("api-app-predict", args=[listing.slug])

    response = subscribe(outsider_client, listing, "free")

    assert response.status_code == 302 and response.url == app_page
    subscription = Subscription.objects.get()
    assert (subscription.subscriber, subscription.plan.name, subscription.status) == (
        outsider_organization, "free", "active"
    )  # fmt: skip
    html = outsider_client.get(app_page).content.decode()
    assert "Subscribed to Digit reader on the free plan." in html
    assert "data-current-plan>free<" in html and "data-used>0 / 1,000<" in html
    assert ">Change plan</button>" in html and "Subscribe first" not in html
    # The app answers the subscriber's session (503: the service has no instance yet), not 403.
    assert outsider_client.post(predict, {"inputs": [[0] * 64]}, content_type="application/json").status_code == 503

    response = subscribe(outsider_client, listing, "pro")

    assert response.status_code == 302
    subscription.refresh_from_db()
    assert (Subscription.objects.count(), subscription.plan.name) == (1, "pro")
    html = outsider_client.get(app_page).content.decode()
    assert "Plan changed to the pro plan." in html and "data-used>0 / 100,000<" in html

    response = outsider_client.post(url("subscription_cancel", subscription.pk), {"next": app_page})

    assert response.status_code == 302 and response.url == app_page
    subscription.refresh_from_db()
    assert subscription.status == "cancelled" and subscription.cancelled_at is not None
    html = outsider_client.get(app_page).content.decode()
    assert "cancelled; its calls answer 403 now" in html and ">Subscribe</button>" in html
    answer = outsider_client.post(predict, {"inputs": [[0] * 64]}, content_type="application/json")
    assert (answer.status_code, answer.json()["code"]) == (403, "forbidden")


def test_subscribing_to_an_unknown_plan_is_a_form_error(outsider_client, listing):
    response = subscribe(outsider_client, listing, "gold")

    assert response.status_code == 400
    assert "The app has no plan &#x27;gold&#x27;." in response.content.decode()
    assert not Subscription.objects.exists()
    response = subscribe(outsider_client, listing, "")
    assert response.status_code == 400 and "Pick a plan." in response.content.decode()
