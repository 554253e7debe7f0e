"""Caps on calls in flight, so that one tenant's load cannot take what others need.

A cap holds a number of calls at once per key (an organization, a service, an app plan's
subscription). A call beyond it waits in a bounded queue, first come first served, for a
bounded time; when the queue is full or the wait runs out it is refused with 429
``too_many_in_flight`` and ``Retry-After``. A waiting call costs a future, not a thread.

Caps are counted in each gateway process: the settings are for the whole site and each
of the ``WEB_CONCURRENCY`` processes holds its share (rounded up), so the embedded default
(one process) is exact and several processes admit at most one call more each.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from django.conf import settings

from inference import observability
from modelbay.core.errors import TooManyInFlight


@dataclass(eq=False)
class _Waiter:
    wake: asyncio.Future
    granted: bool = False  # set under the lock when a freed slot is handed to this call


@dataclass
class _Slots:
    in_flight: int = 0
    waiting: deque[_Waiter] = field(default_factory=deque)


def process_share(cap: int) -> int:
    """This process's share of a site-wide cap."""
    return max(1, math.ceil(cap / max(1, settings.MODELBAY_GATEWAY_PROCESSES)))


class InFlightLimiter:
    """Calls in flight per key in this process, with a bounded queue behind each cap.

    A freed slot goes straight to the first waiting call. A lock guards the counts because
    a call may come from another event loop's thread (Django's test client runs each call
    in a loop of its own); waiters are woken on their own loop."""

    def __init__(self):
        self._slots: dict[tuple, _Slots] = {}
        self._lock = threading.Lock()

    def in_flight(self, key: tuple) -> int:
        slots = self._slots.get(key)
        return slots.in_flight if slots else 0

    def waiting(self, key: tuple) -> int:
        slots = self._slots.get(key)
        return len(slots.waiting) if slots else 0

    @asynccontextmanager
    async def hold(self, key: tuple, cap: int, *, what: str, queue: int, wait_s: float):
        """A slot under ``key``'s cap for the body of the ``async with``."""
        await self.acquire(key, cap, what=what, queue=queue, wait_s=wait_s)
        try:
            yield
        finally:
            self.release(key)

    async def acquire(self, key: tuple, cap: int, *, what: str, queue: int, wait_s: float) -> None:
        """Take a slot under ``key``'s cap, waiting in its queue if need be; every slot
        taken is given back with ``release``."""
        with self._lock:
            slots = self._slots.get(key)
            if slots is None:
                slots = self._slots[key] = _Slots()
            if slots.in_flight < cap and not slots.waiting:
                slots.in_flight += 1
                return
            if len(slots.waiting) >= queue or wait_s <= 0:
                raise _refusal(what, cap, queued=False)
            waiter = _Waiter(asyncio.get_running_loop().create_future())
            slots.waiting.append(waiter)
        queued = observability.QUEUED.labels(key[0])
        queued.inc()
        try:
            async with asyncio.timeout(wait_s):
                await waiter.wake
        except (TimeoutError, asyncio.CancelledError) as error:
            with self._lock:
                if not waiter.granted:
                    slots.waiting.remove(waiter)
                    self._drop_if_idle(key, slots)
                elif isinstance(error, asyncio.CancelledError):
                    self._release_locked(key)  # handed a slot as the caller left: pass it on
            if isinstance(error, asyncio.CancelledError):
                raise
            if not waiter.granted:
                raise _refusal(what, cap, queued=True) from None
            # else the slot came just as the wait ran out: the call goes on
        finally:
            queued.dec()

    def release(self, key: tuple) -> None:
        with self._lock:
            self._release_locked(key)

    def _release_locked(self, key: tuple) -> None:
        slots = self._slots[key]
        if slots.waiting:
            waiter = slots.waiting.popleft()
            waiter.granted = True  # the slot passes to the first waiting call: in_flight stays
            loop = waiter.wake.get_loop()
            if loop is asyncio.get_running_loop():
                _wake(waiter.wake)
            else:  # a call of another loop's thread (Django's test client)
                loop.call_soon_threadsafe(_wake, waiter.wake)
            return
        slots.in_flight -= 1
        self._drop_if_idle(key, slots)

    def _drop_if_idle(self, key: tuple, slots: _Slots) -> None:
        if slots.in_flight <= 0 and not slots.waiting:
            self._slots.pop(key, None)


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _refusal(what: str, cap: int, *, queued: bool) -> TooManyInFlight:
    why = "no slot came free in time" if queued else "the queue behind it is full"
    return TooManyInFlight(f"{what} may have {cap} calls in flight at once on this gateway process; {why}.")


limiter = InFlightLimiter()
