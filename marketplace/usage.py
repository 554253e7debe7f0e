"""Reads of metered usage: a subscriber's period and days, a publisher's calls and revenue.

The stored rows are the ledger; each web process adds its calls about once a second. A
subscriber's figures add the calls this process billed and has not stored yet, and take
the quota's running count where there is one; a publisher's come from the rows, at most
one flush interval behind.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import Count, Sum

from marketplace import metering
from marketplace.models import DailyUsage, Listing, Subscription, SubscriptionStatus
from marketplace.services import subscription_renew

_CENT = Decimal("0.01")


def _period_rows(subscription: Subscription):
    """The rows of the subscription's period: its organization's calls to the listing through
    any of its subscriptions (a cancelled one and the new one share the period and quota)."""
    return DailyUsage.objects.filter(
        subscription__subscriber_id=subscription.subscriber_id,
        subscription__listing_id=subscription.listing_id,
        period_start=subscription.period_start,
    )


def period_used(subscription: Subscription) -> int:
    """Successful calls in the subscription's current period (toward its quota)."""
    subscription = subscription_renew(subscription=subscription)
    plan = metering.Plan.of(subscription)
    meter = metering.meter()
    live = meter.used(plan)
    if live is not None:
        return live
    return metering.stored_period_calls(plan) + meter.ledger.unstored_in_period(plan)


def subscription_usage(subscription: Subscription) -> dict:
    """``{"used", "quota", "period_start", "period_end", "daily": [{"day", "calls"}]}``."""
    subscription = subscription_renew(subscription=subscription)
    per_day: dict[date, int] = defaultdict(int)
    for row in _period_rows(subscription):
        per_day[row.day] += row.calls
    period_subscriptions = set(
        Subscription.objects.filter(
            subscriber_id=subscription.subscriber_id, listing_id=subscription.listing_id
        ).values_list("pk", flat=True)
    )
    for counter, calls in metering.meter().ledger.unstored().items():
        if counter.subscription_id in period_subscriptions and counter.period_start == subscription.period_start:
            per_day[counter.day] += calls
    return {
        "used": period_used(subscription),
        "quota": subscription.plan.monthly_quota,
        "period_start": subscription.period_start,
        "period_end": subscription.period_end,
        "daily": [{"day": day, "calls": per_day[day]} for day in sorted(per_day) if per_day[day]],
    }


def _revenue(calls: int, price_per_1k: Decimal) -> Decimal:
    return (Decimal(calls) * price_per_1k / 1000).quantize(_CENT, rounding=ROUND_HALF_UP)


def listing_usage(listing: Listing, *, days: int = 30) -> dict:
    """A publisher's figures for one listing over the last ``days`` days (UTC):
    totals, and calls and revenue per subscriber organization, per plan and per day.

    The plans are the offered ones, then the retired ones still in use or with calls in
    the window (``retired``: their subscribers keep them until they change plan)."""
    since = datetime.now(UTC).date() - timedelta(days=days - 1)
    rows = (
        DailyUsage.objects.filter(subscription__listing=listing, day__gte=since)
        .values("day", "plan_id", "plan__price_per_1k", "subscription__subscriber__slug")
        .annotate(calls=Sum("calls"))
    )
    totals = {"calls": 0, "revenue": Decimal(0)}
    by_subscriber: dict[str, dict] = defaultdict(lambda: {"calls": 0, "revenue": Decimal(0)})
    by_plan: dict[int, dict] = defaultdict(lambda: {"calls": 0, "revenue": Decimal(0)})
    by_day: dict[date, dict] = defaultdict(lambda: {"calls": 0, "revenue": Decimal(0)})
    for row in rows:
        revenue = _revenue(row["calls"], row["plan__price_per_1k"])
        for bucket in (
            totals,
            by_subscriber[row["subscription__subscriber__slug"]],
            by_plan[row["plan_id"]],
            by_day[row["day"]],
        ):
            bucket["calls"] += row["calls"]
            bucket["revenue"] += revenue
    active = listing.subscriptions.filter(status=SubscriptionStatus.ACTIVE)
    subscribers_per_plan = {row["plan_id"]: row["n"] for row in active.values("plan_id").annotate(n=Count("id"))}
    plans = [
        {
            "plan": plan.name,
            "price_per_1k": plan.price_per_1k,
            "retired": plan.retired_at is not None,
            "subscribers": subscribers_per_plan.get(plan.pk, 0),
            **by_plan.get(plan.pk, {"calls": 0, "revenue": Decimal(0)}),
        }
        for plan in sorted(listing.plans.all(), key=lambda plan: plan.retired_at is not None)
        if plan.retired_at is None or plan.pk in subscribers_per_plan or plan.pk in by_plan
    ]
    return {
        "listing": listing.slug,
        "since": since,
        "calls": totals["calls"],
        "revenue": totals["revenue"],
        "subscribers": [{"organization": name, **figures} for name, figures in sorted(by_subscriber.items())],
        "plans": plans,
        "daily": [{"day": day, **by_day[day]} for day in sorted(by_day)],
        "active_subscriptions": active.count(),
    }
