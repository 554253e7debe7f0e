"""Redis' asyncio client for the gateway's hot path, one per event loop.

A client's connections belong to the loop that made them: the gateway's process has one
loop, and a call served through Django's test client (``async_to_sync``) runs in a loop
of its own, so clients are kept per loop and dropped with it.
"""

from __future__ import annotations

import asyncio
import weakref

import redis.asyncio
from django.conf import settings

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = weakref.WeakKeyDictionary()
_scripts: weakref.WeakKeyDictionary[redis.asyncio.Redis, dict[str, object]] = weakref.WeakKeyDictionary()


# Connections per loop: a burst of calls waits for one (briefly) rather than opening a
# connection each and running Redis out of them.
MAX_CONNECTIONS = 16


def client() -> redis.asyncio.Redis:
    """The running loop's client to ``REDIS_URL``."""
    loop = asyncio.get_running_loop()
    found = _clients.get(loop)
    if found is None:
        # Redis away (refused, or a host that does not answer) costs a call at most this wait.
        wait_s = settings.MODELBAY_REDIS_TIMEOUT_S
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=MAX_CONNECTIONS,
            timeout=wait_s,  # for a free connection
            socket_connect_timeout=wait_s,
            socket_timeout=wait_s,
        )
        found = _clients[loop] = redis.asyncio.Redis(connection_pool=pool)
    return found


async def close() -> None:
    """Close the running loop's client (a loop that ends with its call)."""
    found = _clients.pop(asyncio.get_running_loop(), None)
    if found is not None:
        await found.aclose(close_connection_pool=True)


def script(text: str):
    """A Lua script registered once per client (sent by its SHA, loaded when Redis lacks it)."""
    redis_client = client()
    scripts = _scripts.setdefault(redis_client, {})
    found = scripts.get(text)
    if found is None:
        found = scripts[text] = redis_client.register_script(text)
    return found
