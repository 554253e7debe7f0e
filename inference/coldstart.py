"""Calls to a service at zero are held while an instance starts: a cold start.

A service with ``min_replicas: 0`` runs no instance once it has been idle for its
``scale_to_zero_after_s``. A call that finds no ready instance is not answered 503: the
gateway asks for an instance (``controlplane.services.service_wake``, once per service at
a time in each process), then watches the service's routing table until an instance is
ready, and the held calls go on to it in the order they arrived. One watcher per service
and event loop serves all the calls held there, so a burst costs one look at the table
per interval, not one per call. A call is held at most ``MODELBAY_COLD_START_TIMEOUT_S``,
and never past its own deadline; then 503 ``unavailable`` with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import time
import weakref

from asgiref.sync import sync_to_async
from django.conf import settings

from controlplane import services
from inference import observability, routing
from modelbay.core import generation
from modelbay.core.errors import NotFound, Unavailable

# How often a watcher looks at the routing table, from the first interval to the last:
# a runtime that starts in a few hundred milliseconds is seen soon after it is ready.
FIRST_LOOK_S = 0.02
LAST_LOOK_S = 0.1
# A wake that did not bring an instance (one that failed to start) is asked for again.
WAKE_AGAIN_S = 5.0

_watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, asyncio.Task]] = weakref.WeakKeyDictionary()


async def held(route: routing.Route, *, version: int | None, deadline: float) -> routing.Route:
    """Hold the call until the service has a ready instance (of ``version`` when given);
    return its routing table then. Raise 503 ``unavailable`` after the cold-start timeout."""
    arrived = time.monotonic()
    until = min(deadline, arrived + settings.MODELBAY_COLD_START_TIMEOUT_S)
    loop = asyncio.get_running_loop()
    watchers = _watchers.setdefault(loop, {})
    watcher = watchers.get(route.service_id)
    if watcher is None or watcher.done():
        watcher = watchers[route.service_id] = loop.create_task(_watch(route, version))
    try:
        # shield: one held call giving up (its deadline, a hang-up) leaves the others waiting.
        fresh = await asyncio.wait_for(asyncio.shield(watcher), timeout=max(0.0, until - time.monotonic()))
    except TimeoutError:
        waited = until - arrived
        raise Unavailable(
            f"The service is starting from zero and had no ready instance within {waited:.0f} s; try again shortly.",
            retry_after=5,
        ) from None
    observability.HELD_SECONDS.labels(str(route.organization_id), route.slug).observe(time.monotonic() - arrived)
    if fresh.pick_version(version) is None:  # ready, but not the version this call asked for
        return await held(fresh, version=version, deadline=deadline)
    return fresh


async def _watch(route: routing.Route, version: int | None) -> routing.Route:
    """Wake the service, then look at its table until a version (``version``) is ready;
    ends after the longest cold-start timeout, when no call is left waiting for it."""
    give_up = time.monotonic() + settings.MODELBAY_COLD_START_TIMEOUT_S
    woken_at = 0.0
    look = FIRST_LOOK_S
    while time.monotonic() < give_up:
        if time.monotonic() - woken_at > WAKE_AGAIN_S:
            woken_at = time.monotonic()
            if await sync_to_async(services.service_wake)(service_id=route.service_id):
                observability.COLD_STARTS.labels(str(route.organization_id), route.slug).inc()
        fresh = await routing.aroute_for(route.organization_id, route.slug, gen=await generation.acurrent())
        if fresh is None:
            raise NotFound(f"No service '{route.slug}' in this organization.")
        if fresh.pick_version(version) is not None:
            return fresh
        await asyncio.sleep(look)
        look = min(look * 1.5, LAST_LOOK_S)
    raise TimeoutError
