"""Listings, the marketplace and subscriptions over the API, tenants kept apart."""

import pytest
from rest_framework.test import APIClient

from marketplace.models import Listing, Subscription

pytestmark = pytest.mark.django_db

PLANS = [
    {"name": "free", "monthly_quota": 1000, "rate_limit_per_s": 5, "price_per_1k": "0.00"},
    {"name": "pro", "monthly_quota": 100000, "rate_limit_per_s": 50, "price_per_1k": "0.40"},
]


@pytest.fixture
def listing(api, digits_upload):
    api.post("/api/v1/models", {"name": "digits", "file": digits_upload}, format="multipart")
    api.post("/api/v1/services", {"name": "digits", "model": "digits"}, format="json")
    body = {
        "service": "digits",
        "slug": "digit-reader",
        "title": "Handwritten digits",
        "summary": "Reads a digit from an 8x8 image.",
        "description": "# Digits\nSend 64 numbers.",
        "category": "vision",
        "example_input": {"inputs": [[0] * 64]},
        "plans": PLANS,
    }
    response = api.post("/api/v1/listings", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_a_listing_starts_as_a_draft_that_nobody_else_sees(listing, api):
    assert (listing["status"], listing["service"]) == ("draft", "digits")
    assert [p["name"] for p in listing["plans"]] == ["free", "pro"]
    assert APIClient().get("/api/v1/marketplace").json() == []
    assert APIClient().get("/api/v1/marketplace/digit-reader").status_code == 404


def test_published_listings_are_browsed_and_searched_by_anyone(listing, api):
    assert api.post("/api/v1/listings/digit-reader/publish").json()["status"] == "published"
    anyone = APIClient()
    assert [entry["slug"] for entry in anyone.get("/api/v1/marketplace").json()] == ["digit-reader"]
    assert anyone.get("/api/v1/marketplace", {"q": "handwritten"}).json()[0]["slug"] == "digit-reader"
    assert anyone.get("/api/v1/marketplace", {"q": "speech"}).json() == []
    assert anyone.get("/api/v1/marketplace", {"category": "audio"}).json() == []
    detail = anyone.get("/api/v1/marketplace/digit-reader").json()
    assert detail["plans"][1] == {**PLANS[1], "max_in_flight": None}  # the platform's default
    assert detail["example_input"] == {"inputs": [[0] * 64]}
    assert "service" not in detail and "status" not in detail  # no internals for the public
    api.post("/api/v1/listings/digit-reader/unpublish")
    assert anyone.get("/api/v1/marketplace").json() == []


@pytest.mark.parametrize(
    "change, field",
    [
        ({"service": "nope"}, "service"),
        ({"plans": []}, "plans"),
        ({"plans": [PLANS[0], PLANS[0]]}, "plans"),
        ({"plans": [{**PLANS[0], "monthly_quota": 0}]}, "plans"),
        ({"slug": "Not a slug!"}, "slug"),
        ({"example_input": {"inputs": [[0.5] * 20_000]}}, "example_input"),  # ~100 KiB: a data set, not a sample
        ({"example_output": "x" * 70_000}, "example_output"),
    ],
)
def test_bad_listings_answer_400_naming_the_field(listing, api, change, field):
    body = {"service": "digits", "slug": "other", "title": "T", "plans": PLANS, **change}
    response = api.post("/api/v1/listings", body, format="json")
    assert response.status_code == 400, response.content
    assert any(name.split(".")[0] == field for name in response.json()["fields"]), response.json()
    assert Listing.objects.count() == 1


def test_a_plan_sets_its_calls_in_flight_or_leaves_them_to_the_platform(listing, api):
    plans = [{**PLANS[0], "max_in_flight": 4}, {**PLANS[1], "name": "team", "max_in_flight": None}, PLANS[1]]
    body = {"service": "digits", "slug": "digits-capped", "title": "Capped", "plans": plans}

    response = api.post("/api/v1/listings", body, format="json")

    assert response.status_code == 201, response.content
    expected = {"free": 4, "team": None, "pro": None}
    assert {p["name"]: p["max_in_flight"] for p in response.json()["plans"]} == expected
    assert {p.name: p.max_in_flight for p in Listing.objects.get(slug="digits-capped").plans.all()} == expected
    mine = api.get("/api/v1/listings/digits-capped").json()
    assert {p["name"]: p["max_in_flight"] for p in mine["plans"]} == expected
    api.post("/api/v1/listings/digits-capped/publish")
    public = APIClient().get("/api/v1/marketplace/digits-capped").json()
    assert {p["name"]: p["max_in_flight"] for p in public["plans"]} == expected
    assert {p["name"]: p["max_in_flight"] for p in listing["plans"]} == {"free": None, "pro": None}


@pytest.mark.parametrize("value", [0, -1, 1001, 2.5, "many", True])
def test_calls_in_flight_out_of_range_answer_400_invalid_request(listing, api, value):
    body = {"service": "digits", "slug": "other", "title": "T", "plans": [{**PLANS[0], "max_in_flight": value}]}

    response = api.post("/api/v1/listings", body, format="json")

    assert response.status_code == 400, response.content
    error = response.json()
    assert error["code"] == "invalid_request" and isinstance(error["detail"], str) and error["detail"]
    assert list(error["fields"]) == ["plans.0.max_in_flight"], error
    assert Listing.objects.count() == 1


def test_listing_slugs_are_unique_across_the_marketplace(listing, outsider_api, api):
    api.post("/api/v1/services", {"name": "digits-2", "model": "digits"}, format="json")
    body = {"service": "digits-2", "slug": "digit-reader", "title": "Again", "plans": PLANS}
    assert api.post("/api/v1/listings", body, format="json").status_code == 409


def test_another_organization_subscribes_changes_plan_and_cancels(listing, api, outsider_api):
    api.post("/api/v1/listings/digit-reader/publish")
    response = outsider_api.post("/api/v1/marketplace/digit-reader/subscribe", {"plan": "free"}, format="json")
    assert response.status_code == 201, response.content
    subscription = response.json()
    assert (subscription["listing"], subscription["plan"], subscription["status"], subscription["quota"]) == (
        "digit-reader", "free", "active", 1000
    )  # fmt: skip
    again = outsider_api.post("/api/v1/marketplace/digit-reader/subscribe", {"plan": "pro"}, format="json").json()
    assert (again["id"], again["plan"]) == (subscription["id"], "pro")  # the same subscription, a new plan
    bad = outsider_api.post("/api/v1/marketplace/digit-reader/subscribe", {"plan": "gold"}, format="json")
    assert bad.status_code == 400 and "plan" in bad.json()["fields"]
    assert [s["id"] for s in outsider_api.get("/api/v1/subscriptions").json()] == [subscription["id"]]
    assert api.get("/api/v1/subscriptions").json() == []  # the publisher's own list is its own

    assert api.delete(f"/api/v1/subscriptions/{subscription['id']}").status_code == 404  # not the publisher's
    assert outsider_api.delete(f"/api/v1/subscriptions/{subscription['id']}").status_code == 204
    assert Subscription.objects.get().status == "cancelled"


def test_drafts_cannot_be_subscribed_and_listings_belong_to_their_publisher(listing, api, outsider_api):
    response = outsider_api.post("/api/v1/marketplace/digit-reader/subscribe", {"plan": "free"}, format="json")
    assert response.status_code == 404
    assert outsider_api.get("/api/v1/listings/digit-reader").status_code == 404
    assert outsider_api.post("/api/v1/listings/digit-reader/publish").status_code == 404
    assert outsider_api.get("/api/v1/listings").json() == []
    body = {"service": "digits", "slug": "stolen", "title": "T", "plans": PLANS}
    assert outsider_api.post("/api/v1/listings", body, format="json").status_code == 400  # not its service


def test_a_listing_is_edited_and_its_subscribers_keep_their_plan(listing, api, outsider_api):
    api.post("/api/v1/listings/digit-reader/publish")
    subscription = outsider_api.post("/api/v1/marketplace/digit-reader/subscribe", {"plan": "free"}, format="json")
    plan_ids = set(Listing.objects.get().plans.values_list("pk", flat=True))

    page = {"title": "Digits", "summary": "", "category": "ocr", "example_input": None, "description": "New."}
    response = api.patch("/api/v1/listings/digit-reader", page, format="json")

    assert response.status_code == 200, response.content
    edited = response.json()
    assert {name: edited[name] for name in page} == page
    assert [plan["name"] for plan in edited["plans"]] == ["free", "pro"]
    assert set(Listing.objects.get().plans.values_list("pk", flat=True)) == plan_ids  # plans left out: unchanged

    cheaper = [{**PLANS[0], "monthly_quota": 500}, PLANS[1]]
    edited = api.patch("/api/v1/listings/digit-reader", {"plans": cheaper}, format="json").json()

    assert [(plan["name"], plan["monthly_quota"]) for plan in edited["plans"]] == [("free", 500), ("pro", 100000)]
    assert outsider_api.get("/api/v1/marketplace/digit-reader").json()["plans"] == edited["plans"]
    kept = outsider_api.get("/api/v1/subscriptions").json()
    assert [(s["id"], s["plan"], s["quota"]) for s in kept] == [(subscription.json()["id"], "free", 1000)]


@pytest.mark.parametrize(
    "change, field",
    [
        ({"slug": "renamed"}, "slug"),
        ({"status": "published"}, "status"),
        ({"plans": []}, "plans"),
        ({"plans": [{"name": "free", "price_per_1k": "0.00"}]}, "plans.0.monthly_quota"),
        ({"title": ""}, "title"),
        ({"icon": "rocket"}, "icon"),
    ],
)
def test_a_bad_edit_answers_400_naming_the_field_and_changes_nothing(listing, api, change, field):
    response = api.patch("/api/v1/listings/digit-reader", change, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_request" and field in response.json()["fields"]
    assert api.get("/api/v1/listings/digit-reader").json() == listing


def test_only_the_publisher_edits_its_listing(listing, outsider_api, predict_only_api, api):
    assert outsider_api.patch("/api/v1/listings/digit-reader", {"title": "Mine"}, format="json").status_code == 404
    assert predict_only_api.patch("/api/v1/listings/digit-reader", {"title": "Mine"}, format="json").status_code == 403
    assert api.get("/api/v1/listings/digit-reader").json()["title"] == listing["title"]


def test_predict_only_keys_cannot_manage_listings_or_subscriptions(listing, predict_only_api):
    assert predict_only_api.get("/api/v1/listings").status_code == 403
    assert predict_only_api.post("/api/v1/marketplace/digit-reader/subscribe", {"plan": "free"}).status_code == 403


def test_a_listed_service_cannot_be_deleted(listing, api):
    response = api.delete("/api/v1/services/digits")
    assert (response.status_code, response.json()["code"]) == (409, "conflict")
    assert api.get("/api/v1/services/digits").json()["status"] != "stopped"
