"""Calls in flight per service in this gateway process, reported for the autoscaler.

A call counts toward its service's load from the moment it starts waiting for the
service's cap on calls in flight (calls queued behind it are demand too) until it is
answered, failed, refused or cancelled (``gateway.admitted``). For each service the process
keeps the calls in flight now and their time integral (area += count x elapsed at every
change), so that a report gives the average over the interval since the last one: a burst
between two reports is seen, not only what happens to be in flight at the instant.

Every ``MODELBAY_LOAD_REPORT_S`` a thread of the process (``publisher``) publishes
``{service id: (average, now)}`` under this process's own name (``controlplane.load``). A
service whose calls are over is reported as 0 for a few intervals (the autoscaler sees the
drop), then no more.

On the hot path: a dict lookup, a few float operations and an uncontended lock (the event
loop is one thread; the lock is for the publisher, and for Django's test client, whose
calls run on loops of other threads).
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from time import monotonic

from django.conf import settings

from controlplane import load as store
from modelbay.core.background import Flusher

# A service with nothing in flight is reported as 0 this many intervals after its last call.
IDLE_REPORTS = 3


class _Count:
    __slots__ = ("now", "area", "mark", "ended")

    def __init__(self, at: float):
        self.now = 0  # calls in flight
        self.area = 0.0  # calls x seconds since the last report, up to ``mark``
        self.mark = at
        self.ended = at  # when the last call ended


_lock = threading.Lock()
_counts: dict[int, _Count] = {}
_since = monotonic()  # the start of the interval the next report covers


def started(service_id: int) -> None:
    """A call to the service begins (it waits for the service's cap): pair with ``finished``."""
    global _since
    at = monotonic()
    with _lock:
        count = _counts.get(service_id)
        if count is None:
            if not _counts:  # nothing to report since the last report: the interval starts now
                _since = at
            count = _counts[service_id] = _Count(at)
        count.area += count.now * (at - count.mark)
        count.mark = at
        count.now += 1
    publisher.wake()


def finished(service_id: int) -> None:
    """The call ended: answered, failed, refused or cancelled."""
    at = monotonic()
    with _lock:
        count = _counts.get(service_id)
        if count is None:  # forgotten by a test's reset
            return
        count.area += count.now * (at - count.mark)
        count.mark = count.ended = at
        count.now -= 1


def in_flight(service_id: int) -> int:
    """The calls to the service in flight in this process now."""
    count = _counts.get(service_id)
    return count.now if count else 0


def collect() -> dict[int, tuple[float, int]]:
    """``{service id: (average in flight since the last collect, in flight now)}``, and a
    new interval begins. A service idle for IDLE_REPORTS intervals is left out from then on."""
    global _since
    at = monotonic()
    idle_s = IDLE_REPORTS * settings.MODELBAY_LOAD_REPORT_S
    loads = {}
    with _lock:
        interval, _since = at - _since, at
        for service_id, count in list(_counts.items()):
            area = count.area + count.now * (at - count.mark)
            loads[service_id] = (area / interval if interval > 0 else float(count.now), count.now)
            count.area, count.mark = 0.0, at
            if count.now == 0 and at - count.ended >= idle_s:
                del _counts[service_id]
    return loads


def reset() -> None:
    """Forget every count (tests)."""
    global _since
    with _lock:
        _counts.clear()
        _since = monotonic()


_name: tuple[int, str] | None = None


def process_name() -> str:
    """This process's name in the reports: its host, pid and a random part (new after a fork)."""
    global _name
    pid = os.getpid()
    if _name is None or _name[0] != pid:
        _name = (pid, f"{socket.gethostname()}-{pid}-{secrets.token_hex(4)}")
    return _name[1]


def report() -> None:
    """Publish this process's loads (the publisher's round)."""
    loads = collect()
    if loads:
        store.publish(process_name(), loads)


publisher = Flusher("load-reports", report, every_s=settings.MODELBAY_LOAD_REPORT_S)
