"""Reads of metered usage: a subscriber's period and days, a publisher's calls and revenue.

A subscriber's figures include calls counted since the last flush (the live counters);
a publisher's come from the stored rows, at most one flush interval behind.
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
    live = metering.meter().used(metering.Plan.of(subscription))
    if live is not None:
        return live
    return _period_rows(subscription).aggregate(total=Sum("calls"))["total"] or 0


def subscription_usage(subscription: Subscription) -> dict:
    """``{"used", "quota", "period_start", "period_end", "daily": [{"day", "calls"}]}``."""
    subscription = subscription_renew(subscription=subscription)
    stored = {
        metering.Counter(row.subscription_id, row.period_start, row.plan_id, row.day): row.calls
        for row in _period_rows(subscription)
    }
    today = metering.Counter(subscription.pk, subscription.period_start, subscription.plan_id, datetime.now(UTC).date())
    counts = {**stored, **metering.meter().live_days([*stored, today])}
    per_day: dict[date, int] = defaultdict(int)
    for counter, calls in counts.items():
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
    totals, and calls and revenue per subscriber organization, per plan and per day."""
    since = datetime.now(UTC).date() - timedelta(days=days - 1)
    rows = (
        DailyUsage.objects.filter(subscription__listing=listing, day__gte=since)
        .values("day", "plan__name", "plan__price_per_1k", "subscription__subscriber__slug")
        .annotate(calls=Sum("calls"))
    )
    totals = {"calls": 0, "revenue": Decimal(0)}
    by_subscriber: dict[str, dict] = defaultdict(lambda: {"calls": 0, "revenue": Decimal(0)})
    by_plan: dict[str, dict] = defaultdict(lambda: {"calls": 0, "revenue": Decimal(0)})
    by_day: dict[date, dict] = defaultdict(lambda: {"calls": 0, "revenue": Decimal(0)})
    for row in rows:
        revenue = _revenue(row["calls"], row["plan__price_per_1k"])
        for bucket in (
            totals,
            by_subscriber[row["subscription__subscriber__slug"]],
            by_plan[row["plan__name"]],
            by_day[row["day"]],
        ):
            bucket["calls"] += row["calls"]
            bucket["revenue"] += revenue
    active = listing.subscriptions.filter(status=SubscriptionStatus.ACTIVE)
    subscribers_per_plan = {row["plan__name"]: row["n"] for row in active.values("plan__name").annotate(n=Count("id"))}
    plans = [
        {
            "plan": plan.name,
            "price_per_1k": plan.price_per_1k,
            "subscribers": subscribers_per_plan.get(plan.name, 0),
            **by_plan.get(plan.name, {"calls": 0, "revenue": Decimal(0)}),
        }
        for plan in listing.plans.all()
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
