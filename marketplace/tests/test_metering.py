"""The meter on its own, both kinds (Redis, shared by gateway processes; in process, the
embedded default): exact quotas under concurrent calls, refunds, rates, and a flush that
neither loses nor doubles a call however often it runs or wherever it stops."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import connection
from django.db.models import Sum
from django.test import override_settings
from django.utils import timezone

from marketplace import access, metering
from marketplace.models import DailyUsage, Subscription
from modelbay.core import generation

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["redis", "local"])
def meter(request):
    if request.param == "redis":
        return metering.RedisMeter(settings.REDIS_URL)
    return metering.LocalMeter()


@pytest.fixture
def subscription(api, outsider_api, digits_upload):
    api.post("/api/v1/models", {"name": "digits", "file": digits_upload}, format="multipart")
    api.post("/api/v1/services", {"name": "digits", "model": "digits"}, format="json")
    plans = [
        {"name": "small", "monthly_quota": 50, "rate_limit_per_s": 1000, "price_per_1k": "0.00"},
        {"name": "big", "monthly_quota": 1000, "rate_limit_per_s": 1000, "price_per_1k": "2.00"},
    ]
    body = {"service": "digits", "slug": "digits-app", "title": "Digits", "plans": plans}
    assert api.post("/api/v1/listings", body, format="json").status_code == 201
    api.post("/api/v1/listings/digits-app/publish")
    response = outsider_api.post("/api/v1/marketplace/digits-app/subscribe", {"plan": "small"}, format="json")
    assert response.status_code == 201, response.content
    return Subscription.objects.select_related("plan").get(pk=response.json()["id"])


def _admit_all(meter, plan, calls: int) -> tuple[list, list]:
    """``calls`` admits at once from as many threads; (tickets, refusals)."""
    start = threading.Barrier(calls)

    def one(_):
        start.wait()
        try:
            return meter.admit(plan)
        except metering.TooManyCalls as refusal:
            return refusal
        finally:
            connection.close()  # this thread's, if it queried

    with ThreadPoolExecutor(max_workers=calls) as pool:
        results = list(pool.map(one, range(calls)))
    return [r for r in results if isinstance(r, metering.Ticket)], [
        r for r in results if not isinstance(r, metering.Ticket)
    ]


def _stored(subscription) -> int:
    return DailyUsage.objects.filter(subscription=subscription).aggregate(n=Sum("calls"))["n"] or 0


def test_the_plan_carries_its_calls_in_flight_or_the_platforms_default(subscription):
    with override_settings(MODELBAY_APP_MAX_IN_FLIGHT=6):
        assert subscription.plan.max_in_flight is None
        assert metering.Plan.of(subscription).max_in_flight == 6

        subscription.plan.max_in_flight = 40
        subscription.plan.save(update_fields=["max_in_flight"])
        subscription = Subscription.objects.select_related("plan").get(pk=subscription.pk)

        assert metering.Plan.of(subscription).max_in_flight == 40
    assert metering.Plan.of(subscription).max_in_flight == 40  # the plan's own, whatever the default


def test_quota_holds_exactly_under_concurrent_calls(meter, subscription):
    plan = metering.Plan.of(subscription)
    tickets, refusals = _admit_all(meter, plan, 80)
    assert (len(tickets), len(refusals)) == (50, 30)
    assert {r.code for r in refusals} == {"quota_exceeded"}
    retry_after = refusals[0].retry_after
    assert timedelta(days=29) < timedelta(seconds=retry_after) <= timedelta(days=30)  # until the period ends
    assert meter.used(plan) == 50
    meter.flush()
    assert _stored(subscription) == 50


def test_failed_calls_are_given_back(meter, subscription):
    plan = metering.Plan.of(subscription)
    tickets = [meter.admit(plan) for _ in range(5)]
    for ticket in tickets[:2]:
        meter.settle(ticket, billed=False)
    for ticket in tickets[2:]:
        meter.settle(ticket, billed=True)
    assert meter.used(plan) == 3
    meter.flush()
    assert _stored(subscription) == 3


def test_rate_limit_answers_rate_limited_with_retry_after(meter, subscription):
    plan = metering.Plan.of(subscription)
    plan = metering.Plan(**{**plan.__dict__, "rate_per_s": 4})
    tickets, refusals = _admit_all(meter, plan, 12)
    # 12 calls at once land in one or two one-second windows of 4 calls.
    assert 4 <= len(tickets) <= 8
    assert refusals and {r.code for r in refusals} == {"rate_limited"}
    assert all(r.retry_after == 1 for r in refusals)


def test_flush_is_idempotent_and_a_flush_that_died_half_way_doubles_nothing(meter, subscription):
    plan = metering.Plan.of(subscription)
    for _ in range(7):
        meter.admit(plan)
    half_done = meter.collect()
    metering.store(half_done)  # a flush that stored its batch and died before it forgot it
    for _ in range(3):
        meter.admit(plan)
    meter.flush()
    meter.flush()
    assert _stored(subscription) == 10
    assert meter.flush() == 0  # nothing changed since


def test_counters_start_from_the_database_when_the_meter_has_none(meter, subscription):
    """A new gateway process, or Redis that lost its data: counting goes on from the rows."""
    plan = metering.Plan.of(subscription)
    for _ in range(20):
        meter.admit(plan)
    meter.flush()
    if isinstance(meter, metering.RedisMeter):
        meter.redis.flushdb()
        fresh = meter
    else:
        fresh = metering.LocalMeter()
    tickets, refusals = _admit_all(fresh, plan, 40)
    assert (len(tickets), len(refusals)) == (30, 10)
    fresh.flush()
    assert _stored(subscription) == 50


def test_a_change_of_plan_is_billed_per_plan_and_lifts_the_quota(meter, subscription, outsider_api):
    plan = metering.Plan.of(subscription)
    for _ in range(50):
        meter.admit(plan)
    with pytest.raises(metering.TooManyCalls):
        meter.admit(plan)
    outsider_api.post("/api/v1/marketplace/digits-app/subscribe", {"plan": "big"}, format="json")
    subscription.refresh_from_db()
    bigger = metering.Plan.of(subscription)
    for _ in range(10):
        meter.admit(bigger)
    meter.flush()
    per_plan = dict(DailyUsage.objects.values_list("plan__name").annotate(n=Sum("calls")))
    assert per_plan == {"small": 50, "big": 10}


def test_cancelling_and_subscribing_again_keeps_the_period_and_its_used_quota(meter, subscription, outsider_api):
    """The quota counts per organization, listing and period, whichever subscription row a
    call went through: a cancel and a new subscription do not give a fresh quota."""
    plan = metering.Plan.of(subscription)
    for _ in range(50):
        meter.admit(plan)
    with pytest.raises(metering.QuotaExceeded):
        meter.admit(plan)
    assert outsider_api.delete(f"/api/v1/subscriptions/{subscription.pk}").status_code == 204
    response = outsider_api.post("/api/v1/marketplace/digits-app/subscribe", {"plan": "small"}, format="json")
    assert response.status_code == 201, response.content
    again = Subscription.objects.select_related("plan").get(pk=response.json()["id"])
    assert again.pk != subscription.pk
    assert (again.period_start, again.period_end) == (subscription.period_start, subscription.period_end)
    renewed = metering.Plan.of(again)
    with pytest.raises(metering.QuotaExceeded):
        meter.admit(renewed)
    assert meter.used(renewed) == 50
    meter.flush()
    # A meter that starts from the stored rows (a new process, Redis that lost its data) too.
    if isinstance(meter, metering.RedisMeter):
        meter.redis.flushdb()
        fresh = meter
    else:
        fresh = metering.LocalMeter()
    with pytest.raises(metering.QuotaExceeded):
        fresh.admit(renewed)
    assert outsider_api.get(f"/api/v1/subscriptions/{again.pk}/usage").json()["used"] == 50
    # A larger plan lifts the quota of the period, still counting the calls made in it.
    outsider_api.post("/api/v1/marketplace/digits-app/subscribe", {"plan": "big"}, format="json")
    again.refresh_from_db()
    bigger = metering.Plan.of(again)
    for _ in range(950):
        fresh.admit(bigger)
    with pytest.raises(metering.QuotaExceeded):
        fresh.admit(bigger)


def test_subscribing_again_after_the_cancelled_period_ended_starts_a_new_one(meter, subscription, outsider_api):
    plan = metering.Plan.of(subscription)
    for _ in range(50):
        meter.admit(plan)
    meter.flush()
    assert outsider_api.delete(f"/api/v1/subscriptions/{subscription.pk}").status_code == 204
    Subscription.objects.filter(pk=subscription.pk).update(
        period_start=timezone.now() - timedelta(days=31), period_end=timezone.now() - timedelta(days=1)
    )
    response = outsider_api.post("/api/v1/marketplace/digits-app/subscribe", {"plan": "small"}, format="json")
    again = Subscription.objects.select_related("plan").get(pk=response.json()["id"])
    assert again.period_start > timezone.now() - timedelta(minutes=1)
    meter.admit(metering.Plan.of(again))


def test_an_ended_period_renews_with_a_fresh_quota(subscription):
    Subscription.objects.filter(pk=subscription.pk).update(
        period_start=timezone.now() - timedelta(days=65), period_end=timezone.now() - timedelta(days=35)
    )
    app = async_to_sync(access.app_for)(subscription.subscriber_id, "digits-app", gen=generation.current())
    now = timezone.now()
    assert app.plan.period_start <= now < app.plan.period_end
    assert app.plan.period_end - app.plan.period_start == timedelta(days=30)
    subscription.refresh_from_db()
    assert subscription.period_end == app.plan.period_end


def test_the_publisher_sees_calls_and_revenue_per_subscriber_plan_and_day(subscription, api, outsider_api):
    meter = metering.meter()
    small = metering.Plan.of(subscription)
    for _ in range(40):
        meter.admit(small)
    outsider_api.post("/api/v1/marketplace/digits-app/subscribe", {"plan": "big"}, format="json")
    subscription.refresh_from_db()
    big = metering.Plan.of(subscription)
    for _ in range(500):
        meter.admit(big)
    meter.flush()
    figures = api.get("/api/v1/listings/digits-app/usage").json()
    subscriber = subscription.subscriber.slug
    assert (figures["calls"], figures["revenue"]) == (540, "1.00")  # 500 calls at 2.00 per 1,000
    assert figures["subscribers"] == [{"organization": subscriber, "calls": 540, "revenue": "1.00"}]
    plans = {p["plan"]: (p["subscribers"], p["calls"], p["revenue"]) for p in figures["plans"]}
    assert plans == {"small": (0, 40, "0.00"), "big": (1, 500, "1.00")}
    today = timezone.now().date().isoformat()
    assert figures["daily"] == [{"day": today, "calls": 540, "revenue": "1.00"}]
    assert figures["active_subscriptions"] == 1
    assert outsider_api.get("/api/v1/listings/digits-app/usage").status_code == 404
    mine = outsider_api.get(f"/api/v1/subscriptions/{subscription.pk}/usage").json()
    assert (mine["used"], mine["quota"], mine["daily"]) == (540, 1000, [{"day": today, "calls": 540}])
    assert api.get(f"/api/v1/subscriptions/{subscription.pk}/usage").status_code == 404


def test_reading_usage_after_the_period_ended_starts_the_next_one(subscription, outsider_api):
    meter = metering.meter()
    for _ in range(5):
        meter.admit(metering.Plan.of(subscription))
    meter.flush()
    Subscription.objects.filter(pk=subscription.pk).update(
        period_start=timezone.now() - timedelta(days=31), period_end=timezone.now() - timedelta(days=1)
    )
    DailyUsage.objects.update(period_start=timezone.now() - timedelta(days=31))
    body = outsider_api.get(f"/api/v1/subscriptions/{subscription.pk}/usage").json()
    assert body["used"] == 0 and body["daily"] == []
    assert outsider_api.get("/api/v1/subscriptions").json()[0]["used"] == 0
