"""Forward a call to a ready instance of a service, failing over between instances.

One pooled, kept-alive urllib3 client per process. A connection that cannot be made
(the instance died) is retried on another instance, another zone first; a call that
started but timed out is not retried (504).
"""

from dataclasses import dataclass

import urllib3
from django.conf import settings

from inference import routing
from modelbay.errors import ApiError, Unavailable, UpstreamTimeout

_pool = urllib3.PoolManager(num_pools=512, maxsize=64, block=False, retries=False)

# Failures that mean the request never reached a runtime (or the runtime vanished
# mid-call): safe to send to another instance, since predictions are stateless.
_RETRYABLE = (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ProtocolError, urllib3.exceptions.ConnectTimeoutError)

_FORWARDED_HEADERS = ("Content-Type", "Content-Encoding")


@dataclass(frozen=True)
class Upstream:
    status: int
    body: bytes
    content_type: str
    version: int


def _timeout() -> urllib3.Timeout:
    return urllib3.Timeout(connect=settings.MODELBAY_CONNECT_TIMEOUT, read=settings.MODELBAY_PREDICT_TIMEOUT)


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
) -> Upstream:
    """Send the call to the route's chosen version; raise 503/504 as API errors."""
    version_route = route.pick_version(version)
    if version_route is None:
        if version is not None and not any(v.version == version for v in route.versions):
            raise ApiError(404, "not_found", f"This service does not run version {version}.")
        raise Unavailable()
    targets = _failover_order(routing.healthy_first(version_route.ordered_targets()))
    for target in targets:
        try:
            response = _pool.urlopen(
                method,
                target.endpoint + path,
                body=body,
                headers=headers,
                timeout=_timeout(),
                retries=False,
                redirect=False,
                preload_content=True,
            )
        except urllib3.exceptions.ReadTimeoutError:
            raise UpstreamTimeout() from None
        except _RETRYABLE:
            routing.mark_suspect(target)
            continue
        content_type = response.headers.get("Content-Type", "application/json")
        return Upstream(response.status, response.data, content_type, version_route.version)
    raise Unavailable()


def forwarded_headers(meta: dict) -> dict[str, str]:
    """The request headers a runtime needs, from a Django request's META."""
    headers = {}
    for name in _FORWARDED_HEADERS:
        value = meta.get("CONTENT_TYPE" if name == "Content-Type" else "HTTP_" + name.upper().replace("-", "_"))
        if value:
            headers[name] = value
    return headers
