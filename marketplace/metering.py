"""Metering of app calls: every successful call counted exactly once, held to the plan,
without a database write per call.

An app call passes ``admit()`` before it is forwarded and ``settle()`` after it:

- ``admit`` checks the plan's quota for the billing period and its calls per second,
  and counts the call (per subscription, period, plan and UTC day), in one atomic step;
  the quota counts every call of the subscriber organization to the listing in the period,
  whichever of its subscriptions (one cancelled, then a new one) the call went through;
- ``settle`` takes the count back when the call failed (4xx, 5xx, timeout): only
  successful calls are billed.

Counters live in Redis when ``REDIS_URL`` is set: every gateway process shares them, and
an app call costs one script call. Without Redis (the embedded default, which serves the
web from one process) they live in this process's memory.

``flush()`` copies counter values into ``DailyUsage`` rows. It writes absolute values and
forgets a counter only while the value it stored is still the counter's value, so a flush
that dies half way, or runs twice, neither loses a call nor counts one twice.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import Sum

from marketplace.models import DailyUsage
from modelbay.core import aredis
from modelbay.core.background import Flusher
from modelbay.core.errors import QuotaExceeded, RateLimited, TooManyCalls  # noqa: F401  (TooManyCalls: either)

logger = logging.getLogger(__name__)

# Counters outlive their period by this much, so a late flush still finds them.
_KEEP_AFTER_PERIOD = timedelta(days=7)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(moment: datetime) -> int:
    """A moment as whole microseconds since the epoch (exact, unlike a float timestamp)."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class Plan:
    """What admit needs to know about a subscription, as the gateway caches it.

    The quota and the rate are held per subscriber organization and listing: a new
    subscription to the same app in the same period (``services.subscribe`` keeps the
    period of a cancelled one still running) goes on from the calls already made.
    """

    subscription_id: int
    subscriber_id: int
    listing_id: int
    plan_id: int
    quota: int
    rate_per_s: int
    period_start: datetime
    period_end: datetime
    max_in_flight: int  # calls in flight at once: the plan's, else settings.MODELBAY_APP_MAX_IN_FLIGHT

    @classmethod
    def of(cls, subscription) -> Plan:
        """A subscription's plan and period (the subscription read with its plan)."""
        max_in_flight = subscription.plan.max_in_flight
        return cls(
            subscription_id=subscription.pk,
            subscriber_id=subscription.subscriber_id,
            listing_id=subscription.listing_id,
            plan_id=subscription.plan_id,
            quota=subscription.plan.monthly_quota,
            rate_per_s=subscription.plan.rate_limit_per_s,
            period_start=subscription.period_start,
            period_end=subscription.period_end,
            max_in_flight=settings.MODELBAY_APP_MAX_IN_FLIGHT if max_in_flight is None else max_in_flight,
        )


@dataclass(frozen=True)
class Ticket:
    """One admitted call, to settle when its answer is known."""

    plan: Plan
    day: date


@dataclass(frozen=True)
class Counter:
    """The address of one day's count: what a ``DailyUsage`` row holds."""

    subscription_id: int
    period_start: datetime
    plan_id: int
    day: date

    def encode(self) -> str:
        return f"{self.subscription_id}:{_micros(self.period_start)}:{self.plan_id}:{self.day.isoformat()}"

    @classmethod
    def decode(cls, text: str) -> Counter:
        subscription_id, period, plan_id, day = text.split(":")
        period_start = _EPOCH + timedelta(microseconds=int(period))
        return cls(int(subscription_id), period_start, int(plan_id), date.fromisoformat(day))

    @classmethod
    def of(cls, ticket: Ticket) -> Counter:
        return cls(ticket.plan.subscription_id, ticket.plan.period_start, ticket.plan.plan_id, ticket.day)


def _quota_exceeded(plan: Plan) -> QuotaExceeded:
    wait = math.ceil((plan.period_end - datetime.now(UTC)).total_seconds())
    return QuotaExceeded(
        f"This subscription's {plan.quota} calls for the period are used; the period ends "
        f"{plan.period_end.isoformat(timespec='seconds')}. A larger plan takes effect at once.",
        retry_after=wait,
    )


def _rate_limited(plan: Plan) -> RateLimited:
    return RateLimited(f"This plan allows {plan.rate_per_s} calls per second.", retry_after=1)


def _stored_counts(plan: Plan, counter: Counter) -> tuple[int, int]:
    """The database's figures: (calls of the plan's organization to its listing in the
    period, through any of its subscriptions; calls on the counter's own row)."""
    period_rows = DailyUsage.objects.filter(
        subscription__subscriber_id=plan.subscriber_id,
        subscription__listing_id=plan.listing_id,
        period_start=plan.period_start,
    )
    period_used = period_rows.aggregate(total=Sum("calls"))["total"] or 0
    day_row = (
        DailyUsage.objects.filter(
            subscription_id=counter.subscription_id,
            period_start=counter.period_start,
            plan_id=counter.plan_id,
            day=counter.day,
        )
        .values_list("calls", flat=True)
        .first()
    )
    return period_used, day_row or 0


def _period(plan: Plan) -> tuple[int, int, datetime]:
    """What a quota counts over: the subscriber organization, the listing, the period."""
    return plan.subscriber_id, plan.listing_id, plan.period_start


def _rate_owner(plan: Plan) -> str:
    return f"{plan.subscriber_id}:{plan.listing_id}"


def store(values: dict[Counter, int | None]) -> None:
    """Write counter values into their rows (absolute values: writing again changes nothing)."""
    rows = [
        DailyUsage(
            subscription_id=c.subscription_id, period_start=c.period_start, plan_id=c.plan_id, day=c.day, calls=n
        )
        for c, n in sorted(values.items(), key=lambda item: item[0].encode())
        if n is not None
    ]
    if rows:
        DailyUsage.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["subscription", "period_start", "plan", "day"],
            update_fields=["calls"],
        )


# --- Redis: shared by every gateway process ------------------------------------------------
_ADMIT = """
-- KEYS: period count, day count, dirty set. ARGV: quota, rate, rate key prefix, member.
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('EXISTS', KEYS[2]) == 0 then return -3 end
if tonumber(redis.call('GET', KEYS[1])) >= tonumber(ARGV[1]) then return -1 end
local rate_key = ARGV[3] .. redis.call('TIME')[1]
local rate = tonumber(redis.call('GET', rate_key) or '0')
if rate >= tonumber(ARGV[2]) then return -2 end
redis.call('SET', rate_key, rate + 1, 'EX', 2)
redis.call('INCR', KEYS[2])
redis.call('SADD', KEYS[3], ARGV[4])
return redis.call('INCR', KEYS[1])
"""

_REFUND = """
-- KEYS: period count, day count, dirty set. ARGV: member.
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('DECR', KEYS[1])
  redis.call('DECR', KEYS[2])
  redis.call('SADD', KEYS[3], ARGV[1])
end
"""

_FORGET = """
-- KEYS: dirty set. ARGV: member, value stored, counter key.
if redis.call('GET', ARGV[3]) == ARGV[2] or redis.call('EXISTS', ARGV[3]) == 0 then
  redis.call('SREM', KEYS[1], ARGV[1])
end
"""


class RedisMeter:
    DIRTY = "mb:usage:dirty"

    def __init__(self, url: str):
        import redis

        self.redis = redis.Redis.from_url(url)
        self._admit = self.redis.register_script(_ADMIT)
        self._refund = self.redis.register_script(_REFUND)
        self._forget = self.redis.register_script(_FORGET)

    @staticmethod
    def _period_key(plan: Plan) -> str:
        return f"mb:usage:period:{plan.subscriber_id}:{plan.listing_id}:{_micros(plan.period_start)}"

    @staticmethod
    def _day_key(counter: Counter) -> str:
        return f"mb:usage:{counter.encode()}"

    def _admit_call(self, plan: Plan) -> tuple[Ticket, list[str], list]:
        ticket = Ticket(plan, datetime.now(UTC).date())
        counter = Counter.of(ticket)
        keys = [self._period_key(plan), self._day_key(counter), self.DIRTY]
        args = [plan.quota, plan.rate_per_s, f"mb:rate:{_rate_owner(plan)}:", counter.encode()]
        return ticket, keys, args

    @staticmethod
    def _admitted(result: int, ticket: Ticket) -> Ticket:
        if result == -3:
            raise RuntimeError("the usage counters could not be started in Redis")
        if result == -1:
            raise _quota_exceeded(ticket.plan)
        if result == -2:
            raise _rate_limited(ticket.plan)
        return ticket

    def admit(self, plan: Plan) -> Ticket:
        ticket, keys, args = self._admit_call(plan)
        result = self._admit(keys=keys, args=args)
        if result == -3:  # first call of the period or day here, or Redis lost its data
            self._seed(Counter.of(ticket), plan)
            result = self._admit(keys=keys, args=args)
        return self._admitted(result, ticket)

    async def aadmit(self, plan: Plan) -> Ticket:
        """``admit`` for the asynchronous gateway (Redis' asyncio client)."""
        ticket, keys, args = self._admit_call(plan)
        result = await aredis.script(_ADMIT)(keys=keys, args=args)
        if result == -3:
            await sync_to_async(self._seed)(Counter.of(ticket), plan)
            result = await aredis.script(_ADMIT)(keys=keys, args=args)
        return self._admitted(result, ticket)

    def _seed(self, counter: Counter, plan: Plan) -> None:
        """Start missing counters from what the database holds (set only if still missing)."""
        period_used, day_used = _stored_counts(plan, counter)
        expire_at = plan.period_end + _KEEP_AFTER_PERIOD
        pipe = self.redis.pipeline()
        pipe.set(self._period_key(plan), period_used, nx=True, exat=expire_at)
        pipe.set(self._day_key(counter), day_used, nx=True, exat=expire_at)
        pipe.execute()

    def _refund_call(self, ticket: Ticket) -> tuple[list[str], list[str]]:
        counter = Counter.of(ticket)
        return [self._period_key(ticket.plan), self._day_key(counter), self.DIRTY], [counter.encode()]

    def settle(self, ticket: Ticket, *, billed: bool) -> None:
        if not billed:
            keys, args = self._refund_call(ticket)
            self._refund(keys=keys, args=args)

    async def asettle(self, ticket: Ticket, *, billed: bool) -> None:
        if not billed:
            keys, args = self._refund_call(ticket)
            await aredis.script(_REFUND)(keys=keys, args=args)

    def used(self, plan: Plan) -> int | None:
        """Calls counted in the plan's period, or None when no counter holds them."""
        value = self.redis.get(self._period_key(plan))
        return None if value is None else int(value)

    def live_days(self, counters: list[Counter]) -> dict[Counter, int]:
        """Current values of these day counters (those that exist)."""
        if not counters:
            return {}
        values = self.redis.mget([self._day_key(c) for c in counters])
        return {c: int(v) for c, v in zip(counters, values) if v is not None}

    def collect(self) -> dict[Counter, int | None]:
        """The values of the counters changed since they were last stored (None: gone)."""
        counters = sorted((Counter.decode(m.decode()) for m in self.redis.smembers(self.DIRTY)), key=Counter.encode)
        values = self.redis.mget([self._day_key(c) for c in counters]) if counters else []
        return {c: None if v is None else int(v) for c, v in zip(counters, values)}

    def forget(self, stored: dict[Counter, int | None]) -> None:
        """Clear the changed mark of counters whose value is still the one stored."""
        pipe = self.redis.pipeline()
        for counter, value in stored.items():
            args = [counter.encode(), "" if value is None else value, self._day_key(counter)]
            self._forget(keys=[self.DIRTY], args=args, client=pipe)
        pipe.execute()

    def flush(self) -> int:
        values = self.collect()
        store(values)
        self.forget(values)
        return len(values)


# --- in process: the embedded default ------------------------------------------------------
class LocalMeter:
    """The same counters in this process's memory, exact for the calls this process serves.

    The process's meter (``meter()``) stores them about once a second from a thread of its
    own, never inside a request.
    """

    def __init__(self, flusher: Flusher | None = None):
        self._flusher = flusher
        self._lock = threading.Lock()
        self._periods: dict[tuple[int, int, datetime], int] = {}  # (organization, listing, period)
        self._days: dict[Counter, int] = {}
        self._rates: dict[str, tuple[int, int]] = {}  # organization:listing -> (second, calls in it)
        self._dirty: set[Counter] = set()

    def _seeded(self, plan: Plan, counter: Counter) -> bool:
        return _period(plan) in self._periods and counter in self._days

    def _seed(self, plan: Plan, counter: Counter) -> None:
        """Start the counters from what the database holds (a query, outside the lock)."""
        period_used, day_used = _stored_counts(plan, counter)
        with self._lock:
            self._periods.setdefault(_period(plan), period_used)
            self._days.setdefault(counter, day_used)

    def admit(self, plan: Plan) -> Ticket:
        ticket = Ticket(plan, datetime.now(UTC).date())
        if not self._seeded(plan, Counter.of(ticket)):
            self._seed(plan, Counter.of(ticket))
        return self._count(ticket)

    async def aadmit(self, plan: Plan) -> Ticket:
        """``admit`` for the asynchronous gateway: in memory, but for the first call of a
        period or day, whose counters start from the database (off the event loop)."""
        ticket = Ticket(plan, datetime.now(UTC).date())
        if not self._seeded(plan, Counter.of(ticket)):
            await sync_to_async(self._seed)(plan, Counter.of(ticket))
        return self._count(ticket)

    def _count(self, ticket: Ticket) -> Ticket:
        plan, counter, period = ticket.plan, Counter.of(ticket), _period(ticket.plan)
        with self._lock:
            if self._periods[period] >= plan.quota:
                raise _quota_exceeded(plan)
            second = int(time.time())
            rate_second, rate_calls = self._rates.get(_rate_owner(plan), (second, 0))
            if rate_second != second:
                rate_calls = 0
            if rate_calls >= plan.rate_per_s:
                raise _rate_limited(plan)
            self._rates[_rate_owner(plan)] = (second, rate_calls + 1)
            self._periods[period] += 1
            self._days[counter] += 1
            self._dirty.add(counter)
        if self._flusher is not None:
            self._flusher.wake()
        return ticket

    def settle(self, ticket: Ticket, *, billed: bool) -> None:
        if not billed:
            counter = Counter.of(ticket)
            with self._lock:
                self._periods[_period(ticket.plan)] -= 1
                self._days[counter] -= 1
                self._dirty.add(counter)

    async def asettle(self, ticket: Ticket, *, billed: bool) -> None:
        self.settle(ticket, billed=billed)

    def used(self, plan: Plan) -> int | None:
        return self._periods.get(_period(plan))

    def live_days(self, counters: list[Counter]) -> dict[Counter, int]:
        with self._lock:
            return {c: self._days[c] for c in counters if c in self._days}

    def collect(self) -> dict[Counter, int]:
        with self._lock:
            return {c: self._days[c] for c in self._dirty}

    def forget(self, stored: dict[Counter, int]) -> None:
        today = datetime.now(UTC).date()
        with self._lock:
            for counter, value in stored.items():
                if self._days.get(counter) == value:
                    self._dirty.discard(counter)
            # Past days that are stored are done with: a long-running process keeps only today.
            for counter in [c for c in self._days if c.day < today and c not in self._dirty]:
                del self._days[counter]

    def flush(self) -> int:
        values = self.collect()
        store(values)
        self.forget(values)
        return len(values)


@lru_cache(maxsize=1)
def meter() -> RedisMeter | LocalMeter:
    if settings.REDIS_URL:
        return RedisMeter(settings.REDIS_URL)
    local = LocalMeter(Flusher("app-usage", lambda: local.flush()))
    return local
