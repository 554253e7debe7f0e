"""The meter on its own, both kinds (Redis, shared by gateway processes; in process, the
embedded default): exact quotas under concurrent calls, refunds, rates, and a ledger that
neither loses nor doubles a call however often its flush runs or wherever it stops."""

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers
from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Sum
from django.test import override_settings
from django.utils import timezone

from controlplane import events
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


def _billed(meter, plan, calls: int) -> None:
    """``calls`` successful calls, one after the other."""
    for _ in range(calls):
        meter.settle(meter.admit(plan), billed=True)


@contextmanager
def _batches_refused():
    """The database refuses new usage batches while in the block (a real error from it)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION refuse_batch() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$ "
                "LANGUAGE plpgsql"
            )
            cursor.execute(
                "CREATE TRIGGER refuse_batch BEFORE INSERT ON marketplace_usagebatch "
                "FOR EACH ROW EXECUTE FUNCTION refuse_batch()"
            )
        else:
            cursor.execute(
                "CREATE TRIGGER refuse_batch BEFORE INSERT ON marketplace_usagebatch "
                "BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "DROP TRIGGER refuse_batch"
                + (" ON marketplace_usagebatch" if connection.vendor == "postgresql" else "")
            )
            if connection.vendor == "postgresql":
                cursor.execute("DROP FUNCTION refuse_batch()")


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
    for ticket in tickets:
        meter.settle(ticket, billed=True)
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


def test_a_batch_is_stored_once_however_often_it_is_sent(meter, subscription):
    plan = metering.Plan.of(subscription)
    _billed(meter, plan, 7)
    ledger = meter.ledger
    # The batch the next flush sends, already stored by a flush whose answer was lost (the
    # database committed it and went away before saying so): sent again, it adds nothing.
    assert metering.store_batch(ledger._writer, ledger._seq + 1, ledger.unstored()) is True
    assert meter.flush() == 1
    assert _stored(subscription) == 7
    assert metering.store_batch(ledger._writer, ledger._seq, {metering.Counter.of(meter.admit(plan)): 1}) is False
    _billed(meter, plan, 3)
    meter.flush()
    meter.flush()
    assert _stored(subscription) == 10
    assert meter.flush() == 0  # nothing billed since
    assert meter.ledger.unstored() == {}


def test_a_flush_that_fails_keeps_its_batch_for_the_next(meter, subscription):
    """The database refuses the batch (a trigger raises); nothing is lost, and the calls
    billed meanwhile wait behind it."""
    plan = metering.Plan.of(subscription)
    _billed(meter, plan, 4)
    with _batches_refused(), pytest.raises(DatabaseError, match="refused"):
        meter.flush()
    _billed(meter, plan, 2)
    assert sum(meter.ledger.unstored().values()) == 6
    meter.flush()  # the kept batch (4), then the next (2)
    meter.flush()
    assert _stored(subscription) == 6


def test_counters_start_from_the_database_when_the_meter_has_none(meter, subscription):
    """A new gateway process, or Redis that lost its data: counting goes on from the rows."""
    plan = metering.Plan.of(subscription)
    _billed(meter, plan, 20)
    meter.flush()
    if isinstance(meter, metering.RedisMeter):
        meter.redis.flushdb()
        fresh = meter
    else:
        fresh = metering.LocalMeter()
    tickets, refusals = _admit_all(fresh, plan, 40)
    assert (len(tickets), len(refusals)) == (30, 10)
    for ticket in tickets:
        fresh.settle(ticket, billed=True)
    fresh.flush()
    assert _stored(subscription) == 50


def test_a_change_of_plan_is_billed_per_plan_and_lifts_the_quota(meter, subscription, outsider_api):
    plan = metering.Plan.of(subscription)
    _billed(meter, plan, 50)
    with pytest.raises(metering.TooManyCalls):
        meter.admit(plan)
    outsider_api.post("/api/v1/marketplace/digits-app/subscribe", {"plan": "big"}, format="json")
    subscription.refresh_from_db()
    bigger = metering.Plan.of(subscription)
    _billed(meter, bigger, 10)
    meter.flush()
    per_plan = dict(DailyUsage.objects.values_list("plan__name").annotate(n=Sum("calls")))
    assert per_plan == {"small": 50, "big": 10}


def test_cancelling_and_subscribing_again_keeps_the_period_and_its_used_quota(meter, subscription, outsider_api):
    """The quota counts per organization, listing and period, whichever subscription row a
    call went through: a cancel and a new subscription do not give a fresh quota."""
    plan = metering.Plan.of(subscription)
    _billed(meter, plan, 50)
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
    _billed(meter, plan, 50)
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
    _billed(meter, small, 40)
    outsider_api.post("/api/v1/marketplace/digits-app/subscribe", {"plan": "big"}, format="json")
    subscription.refresh_from_db()
    big = metering.Plan.of(subscription)
    _billed(meter, big, 500)
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
    _billed(meter, metering.Plan.of(subscription), 5)
    meter.flush()
    Subscription.objects.filter(pk=subscription.pk).update(
        period_start=timezone.now() - timedelta(days=31), period_end=timezone.now() - timedelta(days=1)
    )
    DailyUsage.objects.update(period_start=timezone.now() - timedelta(days=31))
    body = outsider_api.get(f"/api/v1/subscriptions/{subscription.pk}/usage").json()
    assert body["used"] == 0 and body["daily"] == []
    assert outsider_api.get("/api/v1/subscriptions").json()[0]["used"] == 0


# --- Redis away -----------------------------------------------------------------------------
def _admit_until_refused(meter, plan, most: int) -> tuple[list, list]:
    tickets, refusals = [], []
    for _ in range(most):
        try:
            tickets.append(meter.admit(plan))
        except metering.TooManyCalls as refusal:
            refusals.append(refusal)
    return tickets, refusals


def _wait_for_redis_to_be_tried_again():
    time.sleep(metering._RETRY_REDIS_S + 0.1)


@override_settings(MODELBAY_GATEWAY_PROCESSES=2)
def test_redis_away_then_back_empty_each_call_is_billed_once_and_the_quota_holds(own_redis, subscription):
    meter = metering.RedisMeter(own_redis.url())
    plan = metering.Plan.of(subscription)  # 50 calls
    _billed(meter, plan, 10)
    own_redis.stop()

    # Alone, from the last count it saw (10): this process's half of the 40 left.
    tickets, refusals = _admit_until_refused(meter, plan, 30)
    assert (len(tickets), {r.code for r in refusals}) == (20, {"quota_exceeded"})
    assert all(ticket.alone for ticket in tickets)
    for ticket in tickets[:2]:
        meter.settle(ticket, billed=False)  # failed calls: given back, not billed
    for ticket in tickets[2:]:
        meter.settle(ticket, billed=True)
    meter.flush()  # the ledger is the database: Redis is not needed to store the calls
    assert _stored(subscription) == 28

    own_redis.start()  # back without its data: the count starts again from the ledger
    _wait_for_redis_to_be_tried_again()
    tickets, refusals = _admit_until_refused(meter, plan, 30)
    assert (len(tickets), {r.code for r in refusals}) == (22, {"quota_exceeded"})
    assert not any(ticket.alone for ticket in tickets)
    for ticket in tickets:
        meter.settle(ticket, billed=True)
    assert meter.used(plan) == 50
    meter.flush()
    assert _stored(subscription) == 50


@override_settings(MODELBAY_GATEWAY_PROCESSES=2)
def test_redis_away_then_back_with_its_data_gets_the_calls_counted_alone(own_redis, subscription):
    meter = metering.RedisMeter(own_redis.url())
    plan = metering.Plan.of(subscription)
    _billed(meter, plan, 10)
    own_redis.stop(keep_data=True)

    _billed(meter, plan, 5)  # counted alone
    meter.settle(meter.admit(plan), billed=False)  # and one failed call, given back
    own_redis.start()  # its count says 10
    _wait_for_redis_to_be_tried_again()
    _billed(meter, plan, 1)  # the first call back hands the 5 over
    assert meter.used(plan) == 16
    assert int(meter.redis.get(meter._period_key(plan))) == 16
    meter.flush()
    assert _stored(subscription) == 16
    # Each process hands over its own calls, once.
    _billed(meter, plan, 1)
    assert meter.used(plan) == 17


def test_redis_away_a_call_counted_in_redis_and_failed_after_is_given_back_when_it_returns(own_redis, subscription):
    meter = metering.RedisMeter(own_redis.url())
    plan = metering.Plan.of(subscription)
    _billed(meter, plan, 3)
    in_flight = meter.admit(plan)  # counted in Redis (4) ...
    own_redis.stop(keep_data=True)
    meter.settle(in_flight, billed=False)  # ... fails while Redis is away
    own_redis.start()
    _wait_for_redis_to_be_tried_again()
    _billed(meter, plan, 1)
    assert meter.used(plan) == 4


@override_settings(MODELBAY_GATEWAY_PROCESSES=2)
def test_redis_back_empty_a_count_started_from_the_rows_does_not_get_the_calls_counted_alone_twice(
    own_redis, subscription
):
    url, plan = own_redis.url(), metering.Plan.of(subscription)
    first, second = metering.RedisMeter(url), metering.RedisMeter(url)  # two gateway processes
    _billed(first, plan, 2)
    _billed(second, plan, 2)
    own_redis.stop()
    _billed(first, plan, 3)
    _billed(second, plan, 4)
    first.flush()
    second.flush()
    assert _stored(subscription) == 11

    own_redis.start()
    _wait_for_redis_to_be_tried_again()
    _billed(first, plan, 1)  # starts the count again from the rows (11), which hold the calls counted alone
    _billed(second, plan, 1)  # so its own 4 are not added to that count again
    assert first.used(plan) == second.used(plan) == 13


def test_a_stored_batch_tells_the_apps_subscriber_and_publisher_once_and_never_waits_on_the_layer(
    subscription, monkeypatch, settings
):
    """The console's open pages hear of the stored calls (``controlplane.events``): one event
    for the subscriber organization and one for the publisher, however many counters the
    batch holds; none for a batch stored before. A channel layer that never answers neither
    fails nor slows the flush (the gateway's thread): the events go out from a thread of their own."""
    told = []
    monkeypatch.setattr(
        events, "publish", lambda organization_id, slug, kind="service": told.append((organization_id, slug, kind))
    )
    meter = metering.LocalMeter()
    plan = metering.Plan.of(subscription)
    _billed(meter, plan, 3)
    meter.ledger.bill(
        metering.Counter(
            plan.subscription_id, plan.period_start, plan.plan_id, plan.period_start.date() + timedelta(days=1)
        )
    )

    assert meter.flush() == 2
    expected = [
        (subscription.listing.publisher_id, "digits-app", "app"),
        (subscription.subscriber_id, "digits-app", "app"),
    ]
    deadline = time.monotonic() + 5
    while len(told) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sorted(told) == sorted(expected)
    assert (
        metering.store_batch(meter.ledger._writer, meter.ledger._seq, {metering.Counter.of(meter.admit(plan)): 1})
        is False
    )

    monkeypatch.undo()
    with socket.create_server(("127.0.0.1", 0)) as silent:  # takes connections, never answers
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [f"redis://127.0.0.1:{silent.getsockname()[1]}/0"]},
            }
        }
        channel_layers.backends.clear()
        try:
            _billed(meter, plan, 2)
            started = time.monotonic()
            assert meter.flush() == 1
            assert time.monotonic() - started < 1.0
            assert _stored(subscription) == 6
        finally:
            channel_layers.backends.clear()
