"""The gateway's hot path, asynchronous: a call waiting on its model costs a coroutine and
a few kilobytes, never a thread, so one tenant's slow model holds up nobody else.

A call with an API key to a predict path (``/api/v1/services/{slug}/predict``,
``/api/v1/apps/{slug}/predict``, the Open Inference Protocol under ``/v2/models/``) is
served here, straight from the ASGI server (:class:`GatewayApp`): the key, the route and
an app's plan come from the in-process caches (a miss loads from the database off the
event loop), caps on calls in flight keep tenants apart (``inference.limits``), and the
call goes to a runtime on the asynchronous client (``inference.forwarding``). Everything
else, and a predict call without a key (the console's, on its session), goes to Django,
whose views reach the same ``serve_*`` functions (``inference.api.views``).

A caller that hangs up cancels its call: the runtime's connection is closed and the call's
slots are freed at once.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import weakref
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from django.conf import settings
from rest_framework import exceptions

from accounts.authentication import WWW_AUTHENTICATE, AuthContext, aauthenticate_key, bearer_key
from accounts.choices import Scope
from inference import forwarding, limits, load, observability, routing
from modelbay.core import aredis, background, generation
from modelbay.core.errors import Forbidden, NotFound, PayloadTooLarge, api_exception_handler


@dataclass(frozen=True)
class Call:
    """One call to a model, as the gateway needs it, whichever server received it."""

    route_kind: str  # service, app or oip (the metrics' label)
    slug: str
    method: str
    path: str  # the runtime's path
    version: int | None
    body: bytes | None
    headers: dict[str, str]  # what the runtime needs of the caller's headers
    route_key: str | None
    arrived: float = field(default_factory=time.monotonic)  # its deadline counts from here

    def deadline(self, route: routing.Route) -> float:
        """When the call must be answered (``time.monotonic()``): its service's ``timeout_s``
        after its arrival, whatever it waited for on the way (a slot, a cache miss)."""
        return self.arrived + route.timeout_s


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    service: tuple[str, str, str] = ("", "", "")  # organization, service, version: the metrics' labels
    code: str = ""  # an error's code (the metrics' rejections)


Handler = Callable[[Call, AuthContext, str], Awaitable[Answer]]


def upstream_answer(upstream: forwarding.Upstream) -> Answer:
    return Answer(
        upstream.status,
        upstream.body,
        upstream.content_type,
        (("X-Model-Version", str(upstream.version)),),
        (str(upstream.organization_id), upstream.service, str(upstream.version)),
    )


def error_answer(error: Exception) -> Answer:
    """An error as the API shows it everywhere (``api_exception_handler``)."""
    if isinstance(error, (exceptions.AuthenticationFailed, exceptions.NotAuthenticated)):
        error.auth_header = WWW_AUTHENTICATE
    response = api_exception_handler(error, {"view": "gateway"})
    headers = tuple((name, value) for name, value in response.headers.items() if name != "Content-Type")
    body = json.dumps(response.data).encode()
    return Answer(response.status_code, body, headers=headers, code=response.data.get("code", ""))


def body_too_large() -> PayloadTooLarge:
    return PayloadTooLarge(f"Request bodies are limited to {settings.MODELBAY_MAX_PREDICT_BYTES} bytes.")


def require_predict(context: AuthContext) -> None:
    if Scope.PREDICT not in context.scopes:
        raise Forbidden("This API key lacks the 'predict' scope.")


# --- caps on calls in flight ---------------------------------------------------------


@dataclass(frozen=True)
class Cap:
    key: tuple
    limit: int  # for the whole site (each process holds its share)
    what: str  # who is held to it, for the error's detail
    # A service's own cap: from the wait for it to the answer, the call is the service's
    # load (``inference.load``, what the autoscaler scales on).
    service_id: int | None = None


def organization_cap(organization_id: int) -> Cap:
    return Cap(("organization", organization_id), settings.MODELBAY_ORG_MAX_IN_FLIGHT, "This organization")


def service_cap(route: routing.Route) -> Cap:
    return Cap(
        ("service", route.organization_id, route.slug),
        settings.MODELBAY_SERVICE_MAX_IN_FLIGHT,
        "This service",
        route.service_id,
    )


@asynccontextmanager
async def admitted(caps: list[Cap], *, deadline: float):
    """Hold a slot under each cap (in order) for the body, or raise 429 ``too_many_in_flight``:
    a call waits for a slot at most MODELBAY_IN_FLIGHT_WAIT_S, and never past its deadline.
    From the wait for a service's cap on, the call counts as that service's load."""
    held = []
    loaded = None
    try:
        for cap in caps:
            if cap.service_id is not None:
                loaded = cap.service_id
                load.started(loaded)
            wait_s = min(deadline - time.monotonic(), settings.MODELBAY_IN_FLIGHT_WAIT_S)
            share = limits.process_share(cap.limit)
            queue = settings.MODELBAY_IN_FLIGHT_QUEUE
            await limits.limiter.acquire(cap.key, share, what=cap.what, queue=queue, wait_s=wait_s)
            held.append(cap.key)
        yield
    finally:
        for key in reversed(held):
            limits.limiter.release(key)
        if loaded is not None:
            load.finished(loaded)


# --- the handlers ----------------------------------------------------------------------


async def _route(organization_id: int, slug: str, gen: str) -> routing.Route:
    route = await routing.aroute_for(organization_id, slug, gen=gen)
    if route is None:
        raise NotFound(f"No service '{slug}' in this organization.")
    return route


async def serve_service(call: Call, context: AuthContext, gen: str) -> Answer:
    """A call to one of the caller's own services (predict, OIP infer and metadata)."""
    require_predict(context)
    route = await _route(context.organization_id, call.slug, gen)
    deadline = call.deadline(route)
    async with admitted([organization_cap(context.organization_id), service_cap(route)], deadline=deadline):
        upstream = await forwarding.forward(
            route,
            method=call.method,
            path=call.path,
            body=call.body,
            headers=call.headers,
            version=call.version,
            route_key=call.route_key,
            deadline=deadline,
        )
    return upstream_answer(upstream)


async def serve_model_ready(call: Call, context: AuthContext, gen: str) -> Answer:
    """OIP model readiness: whether the version (or any) has a ready instance."""
    require_predict(context)
    route = await _route(context.organization_id, call.slug, gen)
    ready = route.pick_version(call.version) is not None
    return Answer(200 if ready else 503, json.dumps({"name": call.slug, "ready": ready}).encode())


async def serve_from_django(handler: Handler, call: Call, context: AuthContext, gen: str) -> Answer:
    """A call that came through Django (``async_to_sync``): on the server's own loop (a
    console call in production), or on a loop made for this call alone (Django's test
    client), whose connections are closed with it."""
    try:
        return await handler(call, context, gen)
    finally:
        if asyncio.get_running_loop() not in _server_loops:
            forwarding.close_pool()
            if settings.REDIS_URL:
                await aredis.close()


# --- the ASGI server's side --------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    pattern: re.Pattern
    method: str
    route_kind: str
    handler: Handler
    runtime_path: str | None = None  # None: the runtime's path is the call's own


SLUG = r"(?P<slug>[-a-zA-Z0-9_]+)"  # as Django's <slug:...>
_VERSION = r"(?:/versions/(?P<version>[0-9]+))?"

ENDPOINTS = (
    Endpoint(re.compile(rf"/api/v1/services/{SLUG}/predict"), "POST", "service", serve_service, "/predict"),
    Endpoint(re.compile(rf"/v2/models/{SLUG}{_VERSION}/infer"), "POST", "oip", serve_service),
    Endpoint(re.compile(rf"/v2/models/{SLUG}{_VERSION}"), "GET", "oip", serve_service),
    Endpoint(re.compile(rf"/v2/models/{SLUG}{_VERSION}/ready"), "GET", "oip", serve_model_ready),
)

_PREFIXES = ("/api/v1/services/", "/api/v1/apps/", "/v2/models/")


class _ClientGone(Exception):
    """The caller hung up before its call was answered."""


class GatewayApp:
    """The ASGI application in front of Django: calls with an API key to the endpoints are
    served here; everything else goes to ``fallback`` (Django)."""

    def __init__(self, endpoints, fallback):
        self.endpoints = tuple(endpoints)
        self.fallback = fallback

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith(_PREFIXES):
            for endpoint in self.endpoints:
                match = endpoint.pattern.fullmatch(scope["path"])
                if match is not None and scope["method"] == endpoint.method:
                    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
                    if "authorization" in headers:  # else the console's session call: Django's
                        return await _serve(endpoint, match, headers, scope, receive, send)
                    break
        return await self.fallback(scope, receive, send)


# The event loops of the ASGI server's workers (the lifespan starts on them): their
# connections to the runtimes and to Redis are kept for the life of the process.
_server_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


async def lifespan(scope, receive, send) -> None:
    """The ASGI lifespan: note the server's loop (caches and pools fill on first use); at
    shutdown, store what the process counted."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _server_loops.add(asyncio.get_running_loop())
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            # What the process counted and has not stored yet (billed app calls, figures).
            await asyncio.to_thread(background.flush_all)
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _serve(endpoint: Endpoint, match: re.Match, headers: dict[str, str], scope, receive, send) -> None:
    arrived, started = time.monotonic(), time.perf_counter()
    try:
        body = await _read_body(headers, receive)  # a GET's too: what comes after it is the hang-up
        version = match.groupdict().get("version")
        call = Call(
            route_kind=endpoint.route_kind,
            slug=match["slug"],
            method=endpoint.method,
            path=endpoint.runtime_path or scope["path"],
            version=int(version) if version else None,
            body=body if endpoint.method == "POST" else None,
            headers=forwarding.forwarded_headers(headers),
            route_key=headers.get("x-route-key"),
            arrived=arrived,
        )
        gen = await generation.acurrent()
        context = await aauthenticate_key(bearer_key(headers["authorization"]), gen=gen)
        answer = await _unless_client_leaves(endpoint.handler(call, context, gen), receive)
    except _ClientGone:
        observability.record_call(
            endpoint.route_kind, 499, ("", "", ""), "client_closed", time.perf_counter() - started
        )
        return
    except Exception as error:  # every error is an answer in the API's shape
        answer = error_answer(error)
    response_headers = [(b"content-type", answer.content_type.encode("latin-1"))]
    response_headers += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers]
    await send({"type": "http.response.start", "status": answer.status, "headers": response_headers})
    await send({"type": "http.response.body", "body": answer.body})
    observability.record_call(
        endpoint.route_kind, answer.status, answer.service, answer.code, time.perf_counter() - started
    )


async def _read_body(headers: dict[str, str], receive) -> bytes:
    limit = settings.MODELBAY_MAX_PREDICT_BYTES
    if int(headers.get("content-length") or 0) > limit:
        raise body_too_large()
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise body_too_large()
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _unless_client_leaves(serving: Awaitable[Answer], receive) -> Answer:
    """The answer, unless the caller disconnects first: then the call is cancelled (its
    runtime connection closed, its slots freed) and ``_ClientGone`` raised."""
    this_call = asyncio.current_task()
    gone = False

    def hung_up(watch: asyncio.Future) -> None:
        nonlocal gone
        if not watch.cancelled():  # the body is read: the next message is the hang-up
            gone = True
            this_call.cancel()

    watch = asyncio.ensure_future(receive())
    watch.add_done_callback(hung_up)
    try:
        return await serving
    except asyncio.CancelledError:
        if not gone:
            raise
        this_call.uncancel()
        raise _ClientGone() from None
    finally:
        watch.remove_done_callback(hung_up)
        watch.cancel()
