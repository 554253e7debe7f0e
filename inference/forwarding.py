"""Forward a call to a ready instance of a service, failing over between instances.

A connection that cannot be made, or that the instance drops (it died), is retried on
another instance, another zone first: predictions are stateless, so sending one again
is safe. A call has one deadline in all, its service's ``timeout_s``: past it, 504, the
connection to the runtime is hung up, and the call is not retried. An answer larger than
MODELBAY_MAX_RESPONSE_BYTES is cut off: 502 ``model_error``.

Every call carries the target instance's credential, and an answer must name that
instance (``X-Modelbay-Instance``): an answer from another runtime (a port reused by
another instance) or a 401 (the runtime does not know this credential) is dropped, the
route is marked stale, and the call goes to the next instance as after a refused
connection; with none left, 503.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings

from inference import metrics, observability, routing
from modelbay.core.errors import ModelError, NotFound, Unavailable, UpstreamTimeout
from runtime.client import ConnectFailed, Dropped, TimedOut, TooLarge, UpstreamPool, WrongInstance

_pool = UpstreamPool(connect_timeout=settings.MODELBAY_CONNECT_TIMEOUT)

_FORWARDED_HEADERS = ("Content-Type", "Content-Encoding")


@dataclass(frozen=True)
class Upstream:
    status: int
    body: bytes
    content_type: str
    version: int
    organization_id: int = 0  # the service that answered (for the metrics' labels)
    service: str = ""


def _request(target: routing.Target, method: str, path: str, body: bytes | None, headers: dict, timeout: float):
    """One call to one instance, with its credential; its answer must name it, arrive whole
    within ``timeout`` seconds and be no larger than MODELBAY_MAX_RESPONSE_BYTES."""
    return _pool.request(
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


def forward(
    route: routing.Route,
    *,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
    version: int | None = None,
    route_key: str | None = None,
) -> Upstream:
    """Send the call to the route's chosen version; raise 503/504 as API errors."""
    version_route = route.pick_version(version, route_key=route_key)
    if version_route is None:
        if version is not None and not any(v.version == version for v in route.versions):
            raise NotFound(f"This service does not run version {version}.")
        raise Unavailable()
    started = time.monotonic()
    deadline = started + route.timeout_s  # the whole call's, failovers included
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
                reply = _request(target, method, path, body, headers, max(0.001, deadline - time.monotonic()))
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


# Shadow calls run beside the answered ones, never in their way: a few threads, and
# calls beyond what they can take are dropped rather than queued.
_MAX_SHADOW_IN_FLIGHT = 32
_shadow_slots = threading.BoundedSemaphore(_MAX_SHADOW_IN_FLIGHT)
_shadow_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="shadow")


def _mirror(
    route: routing.Route, shadow: routing.VersionRoute, *, path: str, body: bytes | None, headers: dict
) -> None:
    """Send a copy of the call to a shadow version; its answer is only measured."""
    if not _shadow_slots.acquire(blocking=False):
        return

    def send() -> None:
        started = time.perf_counter()
        try:
            target = routing.healthy_first(shadow.ordered_targets())[0]
            reply = _request(target, "POST", path, body, headers, route.timeout_s)
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

    _shadow_pool.submit(send)


def forwarded_headers(meta: dict) -> dict[str, str]:
    """The request headers a runtime needs, from a Django request's META."""
    headers = {}
    for name in _FORWARDED_HEADERS:
        value = meta.get("CONTENT_TYPE" if name == "Content-Type" else "HTTP_" + name.upper().replace("-", "_"))
        if value:
            headers[name] = value
    return headers
