"""Metering of app calls: every successful call billed exactly once and held to its plan,
without a database write per call and without depending on Redis keeping its memory.

An app call passes ``admit()`` before it is forwarded and ``settle()`` after it:

- ``admit`` checks the plan's quota for the billing period and its calls per second and
  counts the call toward the quota, in one atomic step; the quota counts every call of
  the subscriber organization to the listing in the period, whichever of its subscriptions
  (one cancelled, then a new one) the call went through;
- ``settle`` bills a successful call (per subscription, period, plan and UTC day) and gives
  its place in the quota back when it failed (4xx, 5xx, timeout).

Two stores, two jobs:

- **The ledger is the database** (``DailyUsage``). Each process keeps the calls it billed
  in memory (``Ledger``) and a thread of its own adds them to the rows about once a
  second (``MODELBAY_USAGE_FLUSH_S``), in batches the database takes exactly once
  (``UsageBatch``): a batch whose answer was lost is sent again and found stored. A batch
  stored tells the console's open pages of the apps' subscribers and publishers
  (``controlplane.events.app_usage_changed``), once per organization and app.
- **The quota's running count** lives in Redis when ``REDIS_URL`` is set, shared by every
  gateway process (one script call per app call), and in this process's memory on the
  embedded default (one web process). A count that is missing (a new period, Redis
  restarted empty) starts again from the ledger.

While Redis is away each process counts alone (``LocalCounts``), from the last shared
count it saw, admitting at most its share (1 / ``WEB_CONCURRENCY``) of what was left of
the quota and of the rate; when Redis answers again it adds those calls to the shared count.

What this bounds (docs/operations.md): the rows lag each process by one flush; a count
started again from them misses that last flush's calls, by which a quota may be passed.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Sum
from django.utils import timezone

from controlplane import events
from marketplace.models import DailyUsage, Subscription, UsageBatch
from modelbay.core import aredis
from modelbay.core.background import Flusher
from modelbay.core.errors import QuotaExceeded, RateLimited, TooManyCalls  # noqa: F401  (TooManyCalls: either)

logger = logging.getLogger(__name__)

# The shared counts outlive their period by this much.
_KEEP_AFTER_PERIOD = timedelta(days=7)
# A batch's name is kept this long: a flush sends a batch again within seconds.
_KEEP_BATCHES = timedelta(days=1)
# Redis found away: the next try to reach it is this much later (the calls between count alone).
_RETRY_REDIS_S = 1.0
_REDIS_ERRORS = (redis.RedisError, OSError)


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
    alone: bool = False  # counted toward the quota by this process alone (Redis away)


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


def _period(plan: Plan) -> tuple[int, int, datetime]:
    """What a quota counts over: the subscriber organization, the listing, the period."""
    return plan.subscriber_id, plan.listing_id, plan.period_start


def _in_period(counter: Counter, plan: Plan, subscription_ids: set[int]) -> bool:
    return counter.subscription_id in subscription_ids and counter.period_start == plan.period_start


def _rate_owner(plan: Plan) -> str:
    return f"{plan.subscriber_id}:{plan.listing_id}"


def _today() -> date:
    return datetime.now(UTC).date()


# --- the ledger: the database ---------------------------------------------------------------
def stored_period_calls(plan: Plan) -> int:
    """Calls of the plan's organization to its listing in the period stored in the rows,
    through any of its subscriptions."""
    rows = DailyUsage.objects.filter(
        subscription__subscriber_id=plan.subscriber_id,
        subscription__listing_id=plan.listing_id,
        period_start=plan.period_start,
    )
    return rows.aggregate(total=Sum("calls"))["total"] or 0


def store_batch(writer: str, seq: int, calls: dict[Counter, int]) -> bool:
    """Add a batch of billed calls to their rows, in one transaction with the batch's name:
    False (and nothing added) when that batch was stored before."""
    with transaction.atomic():
        try:
            with transaction.atomic():
                UsageBatch.objects.create(writer=writer, seq=seq)
        except IntegrityError:
            return False
        subscriptions = {c.subscription_id for c in calls}
        existing = {
            pk: (subscriber_id, publisher_id, slug)
            for pk, subscriber_id, publisher_id, slug in Subscription.objects.filter(pk__in=subscriptions).values_list(
                "pk", "subscriber_id", "listing__publisher_id", "listing__slug"
            )
        }
        changed: set[tuple[int, str]] = set()
        for counter, n in sorted(calls.items(), key=lambda item: item[0].encode()):
            if counter.subscription_id in existing and n:  # a subscription deleted since takes nothing
                _add(counter, n)
                subscriber_id, publisher_id, slug = existing[counter.subscription_id]
                changed |= {(subscriber_id, slug), (publisher_id, slug)}
        # The open pages of the subscribers and the publisher show the calls (after commit,
        # from a thread of its own: one event per organization and app, whatever the batch).
        events.app_usage_changed(changed)
    return True


def _add(counter: Counter, n: int) -> None:
    address = {
        "subscription_id": counter.subscription_id,
        "period_start": counter.period_start,
        "plan_id": counter.plan_id,
        "day": counter.day,
    }
    rows = DailyUsage.objects.filter(**address)
    if rows.update(calls=F("calls") + n):
        return
    _, created = DailyUsage.objects.get_or_create(**address, defaults={"calls": n})
    if not created:  # another process made the row in between
        rows.update(calls=F("calls") + n)


def prune_batches() -> int:
    """Forget the names of batches stored long ago; how many were forgotten."""
    return UsageBatch.objects.filter(stored_at__lt=timezone.now() - _KEEP_BATCHES).delete()[0]


class Ledger:
    """The calls this process billed and has not stored yet, per day counter.

    ``flush()`` stores them as one batch under this process's name and the batch's number;
    when it fails (the database away), the same batch is tried again next time, and the
    calls billed meanwhile wait for the batch after it.
    """

    def __init__(self, flusher: Flusher | None = None):
        self._flusher = flusher
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._calls: dict[Counter, int] = {}
        self._batch: dict[Counter, int] = {}  # taken to store, not yet known stored
        self._writer = secrets.token_hex(8)
        self._seq = 0

    def bill(self, counter: Counter) -> None:
        with self._lock:
            self._calls[counter] = self._calls.get(counter, 0) + 1
        if self._flusher is not None:
            self._flusher.wake()

    def unstored(self) -> dict[Counter, int]:
        with self._lock:
            merged = dict(self._batch)
            for counter, n in self._calls.items():
                merged[counter] = merged.get(counter, 0) + n
        return merged

    def unstored_in_period(self, plan: Plan) -> int:
        """Unstored calls of the plan's organization to its listing in the period."""
        ids = set(
            Subscription.objects.filter(subscriber_id=plan.subscriber_id, listing_id=plan.listing_id).values_list(
                "pk", flat=True
            )
        )
        return sum(n for c, n in self.unstored().items() if _in_period(c, plan, ids))

    def flush(self) -> int:
        """Store what was billed since the last flush; the counters stored (0: nothing new)."""
        with self._flushing:
            if not self._batch:
                with self._lock:
                    self._batch, self._calls = self._calls, {}
                if not self._batch:
                    return 0
                self._seq += 1
            store_batch(self._writer, self._seq, self._batch)  # raises: the same batch next time
            stored = len(self._batch)
            with self._lock:
                self._batch = {}
            return stored


# --- the quota's running count --------------------------------------------------------------
class LocalCounts:
    """Quota and rate counts in this process's memory: the embedded default's, and each
    process's own while Redis is away.

    A period's count starts from ``base`` (what was counted before, anywhere); this process
    may then admit ``share`` of what was left of the quota: all of it on the embedded default
    (one web process), 1/N of it with N gateway processes counting alone. ``delta`` is what
    this process added since, for Redis' count when it is back.
    """

    def __init__(self, processes: int = 1):
        self._processes = max(1, processes)
        self._lock = threading.Lock()
        self._base: dict[tuple, int] = {}
        self._delta: dict[tuple, int] = {}
        self._rates: dict[str, tuple[int, int]] = {}  # organization:listing -> (second, calls in it)

    def started(self, plan: Plan) -> bool:
        return _period(plan) in self._base

    def start(self, plan: Plan, base: int) -> None:
        with self._lock:
            self._base.setdefault(_period(plan), base)

    def count(self, plan: Plan) -> None:
        """Count one call, or raise when the quota or the rate (this process's share) is used."""
        period = _period(plan)
        with self._lock:
            base, delta = self._base[period], self._delta.get(period, 0)
            if delta >= math.ceil((plan.quota - base) / self._processes):  # its share of what was left
                raise _quota_exceeded(plan)
            second = int(time.time())
            rate_second, rate_calls = self._rates.get(_rate_owner(plan), (second, 0))
            if rate_second != second:
                rate_calls = 0
            if rate_calls >= math.ceil(plan.rate_per_s / self._processes):
                raise _rate_limited(plan)
            self._rates[_rate_owner(plan)] = (second, rate_calls + 1)
            self._delta[period] = delta + 1

    def give_back(self, plan: Plan) -> None:
        with self._lock:
            self._delta[_period(plan)] = self._delta.get(_period(plan), 0) - 1

    def used(self, plan: Plan) -> int | None:
        period = _period(plan)
        with self._lock:
            if period not in self._base:
                return None
            return self._base[period] + self._delta.get(period, 0)

    def take(self) -> dict[tuple, int]:
        """What this process counted (net) per period, forgotten here: for the shared count."""
        with self._lock:
            taken = {period: n for period, n in self._delta.items() if n}
            self._base.clear()
            self._delta.clear()
        return taken

    def put_back(self, taken: dict[tuple, int]) -> None:
        with self._lock:
            for period, n in taken.items():
                self._delta[period] = self._delta.get(period, 0) + n


class LocalMeter:
    """The embedded default (one web process): the quota counted in this process's memory,
    from the ledger's rows when a period is first seen."""

    def __init__(self, ledger: Ledger | None = None):
        self.ledger = ledger or Ledger()
        self.counts = LocalCounts()

    def _base(self, plan: Plan) -> int:
        return stored_period_calls(plan) + self.ledger.unstored_in_period(plan)

    def admit(self, plan: Plan) -> Ticket:
        if not self.counts.started(plan):
            self.counts.start(plan, self._base(plan))
        self.counts.count(plan)
        return Ticket(plan, _today())

    async def aadmit(self, plan: Plan) -> Ticket:
        """``admit`` for the asynchronous gateway: in memory, but for the first call of a
        period, whose count starts from the database (off the event loop)."""
        if not self.counts.started(plan):
            self.counts.start(plan, await sync_to_async(self._base)(plan))
        self.counts.count(plan)
        return Ticket(plan, _today())

    def settle(self, ticket: Ticket, *, billed: bool) -> None:
        if billed:
            self.ledger.bill(Counter.of(ticket))
        else:
            self.counts.give_back(ticket.plan)

    async def asettle(self, ticket: Ticket, *, billed: bool) -> None:
        self.settle(ticket, billed=billed)

    def used(self, plan: Plan) -> int | None:
        return self.counts.used(plan)

    def flush(self) -> int:
        return self.ledger.flush()


# --- Redis: the count shared by every gateway process ---------------------------------------
_ADMIT = """
-- KEYS: the period's count. ARGV: quota, rate, rate key prefix.
if redis.call('EXISTS', KEYS[1]) == 0 then return -3 end
if tonumber(redis.call('GET', KEYS[1])) >= tonumber(ARGV[1]) then return -1 end
local rate_key = ARGV[3] .. redis.call('TIME')[1]
local rate = tonumber(redis.call('GET', rate_key) or '0')
if rate >= tonumber(ARGV[2]) then return -2 end
redis.call('SET', rate_key, rate + 1, 'EX', 2)
return redis.call('INCR', KEYS[1])
"""

_GIVE_BACK = """
-- KEYS: the period's count.
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DECR', KEYS[1]) end
"""

# Redis' memory: a token set once in each Redis that keeps its data. A Redis restarted empty
# has another (or none yet): its counts start again from the rows, which hold the calls
# counted alone, and must not get them a second time.
_MEMORY_KEY = "mb:usage:memory"
_LEARN_MEMORY = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""
_ADD_COUNTED_ALONE = """
-- KEYS: the memory token, then periods' counts. ARGV: the token this process knew, then the
-- calls to add to each count (a missing count starts from the rows).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], ARGV[i]) end
end
return 1
"""


class RedisMeter:
    def __init__(self, url: str, ledger: Ledger | None = None):
        self.redis = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)
        self._admit = self.redis.register_script(_ADMIT)
        self._give_back = self.redis.register_script(_GIVE_BACK)
        self._add_counted_alone = self.redis.register_script(_ADD_COUNTED_ALONE)
        self._learn_memory = self.redis.register_script(_LEARN_MEMORY)
        self._memory: bytes | None = None  # the memory token of the Redis this process counts in
        self.ledger = ledger or Ledger()
        self.alone = LocalCounts(processes=settings.MODELBAY_GATEWAY_PROCESSES)
        self._seen: dict[tuple, int] = {}  # the last shared count of each period
        self._away_until = 0.0  # time.monotonic() before which Redis is not tried again
        self._counted_alone = False

    @staticmethod
    def _period_key(plan: Plan) -> str:
        return f"mb:usage:period:{plan.subscriber_id}:{plan.listing_id}:{_micros(plan.period_start)}"

    @staticmethod
    def _period_key_of(period: tuple) -> str:
        subscriber_id, listing_id, period_start = period
        return f"mb:usage:period:{subscriber_id}:{listing_id}:{_micros(period_start)}"

    def _admit_args(self, plan: Plan) -> tuple[list[str], list]:
        return [self._period_key(plan)], [plan.quota, plan.rate_per_s, f"mb:rate:{_rate_owner(plan)}:"]

    def _admitted(self, result: int, ticket: Ticket) -> Ticket:
        if result == -3:
            raise redis.RedisError("the quota's count could not be started in Redis")
        if result == -1:
            raise _quota_exceeded(ticket.plan)
        if result == -2:
            raise _rate_limited(ticket.plan)
        self._seen[_period(ticket.plan)] = result
        return ticket

    def _start_count(self, plan: Plan) -> None:
        """Start a missing shared count from the rows (set only if still missing)."""
        used = stored_period_calls(plan) + self.ledger.unstored_in_period(plan)
        self.redis.set(self._period_key(plan), used, nx=True, exat=plan.period_end + _KEEP_AFTER_PERIOD)

    def _reachable(self) -> bool:
        return self._away_until <= time.monotonic()

    def _went_away(self, error: Exception) -> None:
        if self._reachable():
            logger.warning("Redis is away (%s): app calls are counted by this process alone", error)
        self._away_until = time.monotonic() + _RETRY_REDIS_S
        self._counted_alone = True

    def _alone_base(self, plan: Plan) -> int:
        seen = self._seen.get(_period(plan))
        return seen if seen is not None else stored_period_calls(plan) + self.ledger.unstored_in_period(plan)

    def _count_alone(self, ticket: Ticket) -> Ticket:
        self.alone.count(ticket.plan)
        return Ticket(ticket.plan, ticket.day, alone=True)

    def _hand_over(self) -> None:
        """Add what this process counted alone to the shared counts (Redis is back)."""
        if not self._counted_alone:
            return
        self._counted_alone = False
        taken = self.alone.take()
        if taken and self._memory is not None:
            keys = [_MEMORY_KEY, *(self._period_key_of(p) for p in taken)]
            try:
                added = self._add_counted_alone(keys=keys, args=[self._memory, *taken.values()])
            except _REDIS_ERRORS:
                self.alone.put_back(taken)
                self._counted_alone = True
                raise
            if not added:
                logger.warning("Redis is back without its data: its counts start again from the stored calls")
        self._memory = None  # learnt again: Redis may be another one now
        logger.warning("Redis is back: app calls are counted in Redis again")

    def _remember_memory(self) -> None:
        if self._memory is None:
            self._memory = self._learn_memory(keys=[_MEMORY_KEY], args=[secrets.token_hex(8)])

    async def _ahand_over(self) -> None:
        await sync_to_async(self._hand_over, thread_sensitive=False)()

    def admit(self, plan: Plan) -> Ticket:
        ticket = Ticket(plan, _today())
        if self._reachable():
            keys, args = self._admit_args(plan)
            try:
                self._hand_over()
                self._remember_memory()
                result = self._admit(keys=keys, args=args)
                if result == -3:  # a new period, or Redis lost its data
                    self._start_count(plan)
                    result = self._admit(keys=keys, args=args)
                return self._admitted(result, ticket)
            except _REDIS_ERRORS as error:
                self._went_away(error)
        if not self.alone.started(plan):
            self.alone.start(plan, self._alone_base(plan))
        return self._count_alone(ticket)

    async def aadmit(self, plan: Plan) -> Ticket:
        """``admit`` for the asynchronous gateway (Redis' asyncio client)."""
        ticket = Ticket(plan, _today())
        if self._reachable():
            keys, args = self._admit_args(plan)
            try:
                if self._counted_alone:
                    await self._ahand_over()
                if self._memory is None:
                    self._memory = await aredis.script(_LEARN_MEMORY)(keys=[_MEMORY_KEY], args=[secrets.token_hex(8)])
                result = await aredis.script(_ADMIT)(keys=keys, args=args)
                if result == -3:
                    await sync_to_async(self._start_count)(plan)
                    result = await aredis.script(_ADMIT)(keys=keys, args=args)
                return self._admitted(result, ticket)
            except _REDIS_ERRORS as error:
                self._went_away(error)
        if not self.alone.started(plan):
            self.alone.start(plan, await sync_to_async(self._alone_base)(plan))
        return self._count_alone(ticket)

    def settle(self, ticket: Ticket, *, billed: bool) -> None:
        if billed:
            self.ledger.bill(Counter.of(ticket))
        elif ticket.alone or not self._reachable():
            self.alone.give_back(ticket.plan)
            self._counted_alone = True
        else:
            try:
                self._give_back(keys=[self._period_key(ticket.plan)])
            except _REDIS_ERRORS as error:
                self._went_away(error)
                self.alone.give_back(ticket.plan)

    async def asettle(self, ticket: Ticket, *, billed: bool) -> None:
        if billed or ticket.alone or not self._reachable():
            self.settle(ticket, billed=billed)
            return
        try:
            await aredis.script(_GIVE_BACK)(keys=[self._period_key(ticket.plan)])
        except _REDIS_ERRORS as error:
            self._went_away(error)
            self.alone.give_back(ticket.plan)

    def used(self, plan: Plan) -> int | None:
        """The shared count of the plan's period; None when Redis has none or is away."""
        if not self._reachable():
            return None
        try:
            value = self.redis.get(self._period_key(plan))
        except _REDIS_ERRORS as error:
            self._went_away(error)
            return None
        return None if value is None else int(value)

    def flush(self) -> int:
        return self.ledger.flush()


flusher = Flusher("app-usage", lambda: meter().flush(), every_s=settings.MODELBAY_USAGE_FLUSH_S)


@lru_cache(maxsize=1)
def meter() -> RedisMeter | LocalMeter:
    """This process's meter (a forked child makes its own: its parent's calls are not its)."""
    ledger = Ledger(flusher)
    if settings.REDIS_URL:
        return RedisMeter(settings.REDIS_URL, ledger)
    return LocalMeter(ledger)


os.register_at_fork(after_in_child=meter.cache_clear)
