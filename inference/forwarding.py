"""Forward a call to a ready instance of a service, failing over between instances.

A connection that cannot be made, or that the instance drops (it died), is retried on
another instance, another zone first: predictions are stateless, so sending one again
is safe. A call has one deadline in all, its service's ``timeout_s``: past it, 504, the
connection to the runtime is hung up, and the call is not retried. An answer larger than
MODELBAY_MAX_RESPONSE_BYTES is cut off: 502 ``model_error``. A call to a service at zero is held while an instance
starts (``inference.coldstart``).

Every call carries the target instance's credential, and an answer must name that
instance (``X-Modelbay-Instance``): an answer from another runtime (a port reused by
another instance) or a 401 (the runtime does not know this credential) is dropped, the
route is marked stale, and the call goes to the next instance as after a refused
connection; with none left, 503.

All of it is asynchronous: a call waiting on its model holds a coroutine, not a thread,
and cancelling it (the caller hung up) hangs up on the runtime.
"""

import asyncio
import threading
import time
import weakref
from dataclasses import dataclass

from django.conf import settings

from inference import coldstart, metrics, observability, routing
from modelbay.core.errors import ModelError, NotFound, Unavailable, UpstreamTimeout
from runtime.aclient import AsyncUpstreamPool
from runtime.client import ConnectFailed, Dropped, TimedOut, TooLarge, WrongInstance

# Connections belong to the event loop that made them: one pool per loop (the gateway
# process has one; Django's test client runs each call in a loop of its own).
_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncUpstreamPool] = weakref.WeakKeyDictionary()


def _pool() -> AsyncUpstreamPool:
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        pool = _pools[loop] = AsyncUpstreamPool(connect_timeout=settings.MODELBAY_CONNECT_TIMEOUT)
    return pool


def close_pool() -> None:
    """Close the running loop's connections to the runtimes (a loop that ends with its
    call: its idle connections would keep it, and their sockets, alive)."""
    pool = _pools.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        pool.close()


_FORWARDED_HEADERS = (("Content-Type", "content-type"), ("Content-Encoding", "content-encoding"))


@dataclass(frozen=True)
class Upstream:
    status: int
    body: bytes
    content_type: str
    version: int
    organization_id: int = 0  # the service that answered (for the metrics' labels)
    service: str = ""


async def _request(target: routing.Target, method: str, path: str, body: bytes | None, headers: dict, timeout: float):
    """One call to one instance, with its credential; its answer must name it, arrive whole
    within ``timeout`` seconds and be no larger than MODELBAY_MAX_RESPONSE_BYTES."""
    return await _pool().request(
        target.endpoint,
        method,
        path,
        body=body,
        headers=headers,
        timeout=timeout,
        auth=target.auth,
        instance=target.instance,
        max_body=settings.MODELBAY_MAX_RESPONSE_BYTES,
    )


def _failover_order(targets: list[routing.Target]) -> list[routing.Target]:
    """After the first target, those in other zones before those in the same zone."""
    first, rest = targets[0], targets[1:]
    return [first] + [t for t in rest if t.zone != first.zone] + [t for t in rest if t.zone == first.zone]


async def forward(
    route: routing.Route,
    *,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
    version: int | None = None,
    route_key: str | None = None,
    deadline: float | None = None,
) -> Upstream:
    """Send the call to the route's chosen version; raise 503/504 as API errors.

    ``deadline``: when the whole call must be answered, on ``time.monotonic()`` (default:
    its service's ``timeout_s`` from now)."""
    if deadline is None:
        deadline = time.monotonic() + route.timeout_s  # the whole call's, failovers included
    version_route = route.pick_version(version, route_key=route_key)
    if version_route is None:
        if version is not None and not any(v.version == version for v in route.versions):
            raise NotFound(f"This service does not run version {version}.")
        if not route.scales_to_zero:
            raise Unavailable()
        route = await coldstart.held(route, version=version, deadline=deadline)
        version_route = route.pick_version(version, route_key=route_key)
    started = time.monotonic()
    organization = str(route.organization_id)
    in_flight = observability.IN_FLIGHT.labels(organization, route.slug)

    def count(*, error: bool) -> None:
        elapsed_s = time.monotonic() - started
        observability.UPSTREAM_SECONDS.labels(organization, route.slug).observe(elapsed_s)
        if method == "POST":  # calls to the model; not metadata or readiness
            metrics.record(route.service_id, version_route.version, error=error, elapsed_s=elapsed_s)

    in_flight.inc()
    try:
        targets = _failover_order(routing.healthy_first(version_route.ordered_targets()))
        for target in targets:
            try:
                reply = await _request(target, method, path, body, headers, max(0.001, deadline - time.monotonic()))
            except TimedOut:
                count(error=True)
                raise UpstreamTimeout() from None
            except TooLarge:
                count(error=True)
                limit = settings.MODELBAY_MAX_RESPONSE_BYTES
                raise ModelError(f"The model's answer is larger than {limit} bytes.") from None
            except (ConnectFailed, Dropped):
                routing.mark_suspect(target)
                continue
            except WrongInstance:
                routing.mark_wrong(route, target)
                continue
            if reply.status == 401:  # the instance does not take this credential: a stale table
                routing.mark_wrong(route, target)
                continue
            count(error=reply.status >= 500)
            if method == "POST" and version is None:
                for shadow in route.shadows_for_this_call():
                    _mirror(route, shadow, path=path, body=body, headers=headers)
            return Upstream(
                reply.status, reply.body, reply.content_type, version_route.version, route.organization_id, route.slug
            )
        count(error=True)
        raise Unavailable()
    finally:
        in_flight.dec()


# Shadow calls run beside the answered ones, never in their way: on an event loop of
# their own, in a thread of the process (they outlive the call that made them, whatever
# loop served it), and calls beyond these are dropped rather than queued.
_MAX_SHADOW_IN_FLIGHT = 32
_shadow_slots = threading.BoundedSemaphore(_MAX_SHADOW_IN_FLIGHT)
_shadow_loop: asyncio.AbstractEventLoop | None = None
_shadow_loop_lock = threading.Lock()


def _shadows() -> asyncio.AbstractEventLoop:
    global _shadow_loop
    with _shadow_loop_lock:
        if _shadow_loop is None:
            _shadow_loop = asyncio.new_event_loop()
            threading.Thread(target=_shadow_loop.run_forever, name="shadow-calls", daemon=True).start()
        return _shadow_loop


def _mirror(
    route: routing.Route, shadow: routing.VersionRoute, *, path: str, body: bytes | None, headers: dict
) -> None:
    """Send a copy of the call to a shadow version; its answer is only measured."""
    if not _shadow_slots.acquire(blocking=False):
        return

    async def send() -> None:
        started = time.perf_counter()
        target = None
        try:
            target = routing.healthy_first(shadow.ordered_targets())[0]
            reply = await _request(target, "POST", path, body, headers, route.timeout_s)
            error = reply.status >= 500 or reply.status == 401
            if reply.status == 401:
                routing.mark_wrong(route, target)
        except WrongInstance:
            routing.mark_wrong(route, target)
            error = True
        except Exception:  # a shadow's trouble is only a figure
            error = True
        finally:
            _shadow_slots.release()
        metrics.record(route.service_id, shadow.version, error=error, elapsed_s=time.perf_counter() - started)

    asyncio.run_coroutine_threadsafe(send(), _shadows())


def forwarded_headers(headers: dict[str, str]) -> dict[str, str]:
    """The request headers a runtime needs, from a call's headers (lower-case names)."""
    return {name: headers[key] for name, key in _FORWARDED_HEADERS if headers.get(key)}
