"""The console's live socket (``/ws/console/``, console/consumers.py), through the site's
own WebSocket routes (console/routing.py): on the page's session, scoped to the organization; told which
service changed, and which app's usage (its calls stored: its subscribers and its publisher), on the
Redis channel layer (production) and on the embedded default's shared cache alike; an instance's
output followed as it is written; nothing of another organization's, ever."""

import asyncio

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.test import Client

from accounts.tests.factories import MembershipFactory, OrganizationFactory
from console.consumers import new_lines
from controlplane import services
from controlplane.backends import get_backend
from controlplane.models import Deployment, Instance
from console.routing import websocket_application as application
from marketplace import metering
from marketplace import services as marketplace_services

pytestmark = pytest.mark.django_db(transaction=True)

REDIS_LAYER = {"BACKEND": "channels_redis.core.RedisChannelLayer"}
IN_PROCESS_LAYER = {"BACKEND": "channels.layers.InMemoryChannelLayer"}


@pytest.fixture(params=["redis", "in-process"])
def layer(request, settings):
    """Both ways events travel: the Redis channel layer, and the embedded default's
    in-process layer (then through the shared cache)."""
    if request.param == "redis":
        import os

        url = os.environ.get("TEST_REDIS_URL") or settings.REDIS_URL or "redis://127.0.0.1:6379/13"
        settings.CHANNEL_LAYERS = {"default": {**REDIS_LAYER, "CONFIG": {"hosts": [url]}}}
    else:
        settings.CHANNEL_LAYERS = {"default": IN_PROCESS_LAYER}
    channel_layers.backends.clear()
    yield request.param
    channel_layers.backends.clear()


def _session_cookie(client) -> bytes:
    client.get("/services/")  # the console picks the organization into the session
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def _socket(cookie: bytes | None = None) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
    if cookie:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application, "/ws/console/", headers=headers)


def test_a_socket_without_a_session_is_refused(layer):
    async def scenario():
        socket = _socket()
        connected, code = await socket.connect()
        assert (connected, code) == (False, 4401)

    async_to_sync(scenario)()


def test_a_socket_from_another_site_is_refused(layer, owner_client):
    async def scenario(cookie):
        socket = WebsocketCommunicator(
            application, "/ws/console/", headers=[(b"origin", b"http://evil.example"), (b"cookie", cookie)]
        )
        connected, _ = await socket.connect()
        assert not connected

    async_to_sync(scenario)(_session_cookie(owner_client))


def test_a_change_reaches_the_organizations_pages_and_no_other(layer, owner_client, outsider_client, service):
    owner_cookie, outsider_cookie = _session_cookie(owner_client), _session_cookie(outsider_client)

    async def scenario():
        owner, outsider = _socket(owner_cookie), _socket(outsider_cookie)
        assert (await owner.connect())[0] and (await outsider.connect())[0]
        assert await owner.receive_json_from() == {"type": "live"}
        assert await outsider.receive_json_from() == {"type": "live"}

        await asyncio.to_thread(services.service_update, service=service, replicas=3)

        assert await owner.receive_json_from(timeout=3) == {"type": "changed", "service": service.slug}
        assert await outsider.receive_nothing(timeout=1.5)
        await owner.disconnect()
        await outsider.disconnect()

    async_to_sync(scenario)()


def test_an_apps_stored_calls_reach_its_subscribers_and_publishers_pages_and_no_other(
    layer, owner_client, outsider_client, outsider_organization, listing, monkeypatch
):
    """Calls on two plans (two counters) in one flush: one event for each organization."""
    monkeypatch.setattr(metering.flusher, "paused", True)  # the test flushes, once
    subscription = marketplace_services.subscribe(subscriber=outsider_organization, listing=listing, plan_name="free")
    bystander = Client()
    bystander.force_login(MembershipFactory(organization=OrganizationFactory(slug="initech")).user)
    cookies = [_session_cookie(client) for client in (owner_client, outsider_client, bystander)]

    def calls_stored():
        meter = metering.meter()
        try:
            meter.settle(meter.admit(metering.Plan.of(subscription)), billed=True)
            pro = marketplace_services.subscribe(subscriber=outsider_organization, listing=listing, plan_name="pro")
            for _ in range(2):
                meter.settle(meter.admit(metering.Plan.of(pro)), billed=True)
            assert meter.flush() == 2
        finally:
            connection.close()  # this thread's

    async def scenario():
        publisher, subscriber, other = sockets = [_socket(cookie) for cookie in cookies]
        for socket in sockets:
            assert (await socket.connect())[0]
            assert await socket.receive_json_from() == {"type": "live"}

        await asyncio.to_thread(calls_stored)

        told = {"type": "changed", "app": listing.slug}
        assert await publisher.receive_json_from(timeout=3) == told
        assert await subscriber.receive_json_from(timeout=3) == told
        assert all(await asyncio.gather(*(socket.receive_nothing(timeout=1) for socket in sockets)))
        for socket in sockets:
            await socket.disconnect()

    async_to_sync(scenario)()


def test_an_instance_is_followed_as_it_prints(layer, owner_client, service, settings):
    instance = Instance.objects.create(deployment=Deployment.objects.get(service=service), zone="zone-a")
    log = get_backend().log_dir / f"{instance.id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("loading\nready\n")
    cookie = _session_cookie(owner_client)

    async def scenario():
        socket = _socket(cookie)
        assert (await socket.connect())[0]
        await socket.receive_json_from()
        await socket.send_json_to({"follow": instance.id})
        first = await socket.receive_json_from(timeout=3)
        assert (first["type"], first["lines"]) == ("log", ["loading", "ready"])

        with log.open("a") as output:
            output.write("predict: 1 input\n")
        later = await socket.receive_json_from(timeout=3)
        assert (later["lines"], later["reset"]) == (["predict: 1 input"], False)
        await socket.disconnect()

    async_to_sync(scenario)()


def test_another_organizations_instance_cannot_be_followed(layer, outsider_client, service):
    instance = Instance.objects.create(deployment=Deployment.objects.get(service=service), zone="zone-a")
    cookie = _session_cookie(outsider_client)

    async def scenario():
        socket = _socket(cookie)
        assert (await socket.connect())[0]
        await socket.receive_json_from()
        await socket.send_json_to({"follow": instance.id})
        refusal = await socket.receive_json_from(timeout=3)
        assert refusal == {"type": "error", "detail": f"No instance {instance.id} in this organization."}
        await socket.disconnect()

    async_to_sync(scenario)()


@pytest.mark.parametrize(
    "seen, now, expected",
    [
        ([], ["a", "b"], (["a", "b"], True)),
        (["a", "b"], ["a", "b", "c"], (["c"], True)),
        (["a", "b", "c"], ["b", "c", "d", "e"], (["d", "e"], True)),  # the oldest fell out of the tail
        (["a", "b"], ["a", "b"], ([], True)),
        (["a", "b"], ["x", "y"], (["x", "y"], False)),  # more printed than the tail holds, or a new start
        (["x", "x"], ["x", "x", "x"], (["x"], True)),  # repeated lines: the longest overlap
    ],
)
def test_new_lines(seen, now, expected):
    assert new_lines(seen, now) == expected
