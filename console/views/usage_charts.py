"""What an app's usage charts plot (static/js/usage-charts.js draws them with the vendored
uPlot): the figures of ``marketplace.usage`` as one value per UTC day, each day as the Unix
time of its start. None where there is no call yet: the page says so instead of a chart."""

from datetime import UTC, date, datetime, time, timedelta


def _at(day: date) -> int:
    return int(datetime.combine(day, time(), tzinfo=UTC).timestamp())


def calls_and_revenue(figures: dict, days: int) -> dict | None:
    """A publisher's listing (``usage.listing_usage``): calls and revenue on each of the
    last ``days`` days, the days without calls too."""
    if not figures["calls"]:
        return None
    per_day = {row["day"]: row for row in figures["daily"]}
    span = [figures["since"] + timedelta(days=n) for n in range(days)]
    return {
        "days": [_at(day) for day in span],
        "calls": [per_day[day]["calls"] if day in per_day else 0 for day in span],
        "revenue": [float(per_day[day]["revenue"]) if day in per_day else 0.0 for day in span],
    }


def used_against_quota(figures: dict) -> dict | None:
    """A subscription's period (``usage.subscription_usage``): the calls made by the end
    of each day of the period (none for the days to come), and the quota."""
    if not figures["daily"]:
        return None
    per_day = {row["day"]: row["calls"] for row in figures["daily"]}
    first = figures["period_start"].astimezone(UTC).date()
    last = (figures["period_end"].astimezone(UTC) - timedelta(microseconds=1)).date()
    today = datetime.now(UTC).date()
    span = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    used, total = [], 0
    for day in span:
        total += per_day.get(day, 0)
        used.append(total if day <= today else None)
    return {"days": [_at(day) for day in span], "used": used, "quota": figures["quota"]}
