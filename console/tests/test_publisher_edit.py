"""Editing a listing from the publisher's pages (console.views.publisher.publisher_listing_edit)."""

import pytest

from console.tests.helpers import url
from marketplace.models import Listing

pytestmark = pytest.mark.django_db


def _edit_data(listing, **page) -> dict:
    """The edit form as it opens (the listing's page, its plans, a blank extra row), changed by ``page``."""
    plans = list(listing.offered_plans)
    data = {
        "title": listing.title, "summary": listing.summary, "description": listing.description,
        "category": listing.category, "icon": listing.icon, "example_input": "", "example_output": "",
        "plans-TOTAL_FORMS": len(plans) + 1, "plans-INITIAL_FORMS": len(plans),
        "plans-MIN_NUM_FORMS": 0, "plans-MAX_NUM_FORMS": 1000, **page,
    }  # fmt: skip
    for index, plan in enumerate(plans):
        data |= {
            f"plans-{index}-plan_name": plan.name, f"plans-{index}-monthly_quota": plan.monthly_quota,
            f"plans-{index}-rate_limit_per_s": plan.rate_limit_per_s, f"plans-{index}-price_per_1k": plan.price_per_1k,
        }  # fmt: skip
    return data


def test_the_edit_form_opens_with_the_listing_and_its_plans(owner_client, listing):
    response = owner_client.get(url("publisher_listing_edit", listing.slug))

    assert response.status_code == 200
    html = response.content.decode()
    assert 'value="Digit reader"' in html and 'data-plan-form="free"' in html and 'data-plan-form="pro"' in html
    assert "null" not in html.split('id="edit-listing"')[1]


def test_saving_changes_the_page(owner_client, listing):
    response = owner_client.post(url("publisher_listing_edit", listing.slug), _edit_data(listing, title="Digits 2"))

    assert response.status_code == 302 and response.url == url("publisher_listing_detail", listing.slug)
    assert Listing.objects.get().title == "Digits 2"


def test_stopping_every_plan_is_a_form_error(owner_client, listing):
    data = _edit_data(listing) | {"plans-0-remove": "on", "plans-1-remove": "on"}

    response = owner_client.post(url("publisher_listing_edit", listing.slug), data)

    assert response.status_code == 400
    assert "A listing needs at least one plan." in response.content.decode()
    assert listing.plans.count() == 2


def test_a_bad_plan_is_shown_on_its_row(owner_client, listing):
    data = _edit_data(listing) | {"plans-1-monthly_quota": "0"}

    response = owner_client.post(url("publisher_listing_edit", listing.slug), data)

    assert response.status_code == 400
    assert response.context["plan_forms"][1].errors["monthly_quota"]


def test_another_organization_cannot_edit_a_listing(outsider_client, member_client, listing):
    assert outsider_client.get(url("publisher_listing_edit", listing.slug)).status_code == 404
    assert outsider_client.post(url("publisher_listing_edit", listing.slug), _edit_data(listing)).status_code == 404
    assert member_client.get(url("publisher_listing_edit", listing.slug)).status_code == 200
