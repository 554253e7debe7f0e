"""Values kept in process memory, rebuilt when one shared token moves.

The gateway keeps API keys, routing tables and app access in process memory and reads
only this token from the shared cache on each call (one cache round trip). Whoever
changes a key, a service's traffic, an instance or a subscription calls ``bump()``;
every process then reloads what it holds on its next call. :class:`GenerationCache` is
the one implementation of "a value per process, rebuilt when the token moves".

A missing token (evicted, the cache flushed or restarted) means "reload": a new token is
set, so nothing loaded before can match it. It never means "what is cached still holds".
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.core.cache.backends.redis import RedisSerializer
from django.db import transaction

from modelbay.core import aredis

GENERATION_KEY = "modelbay:generation"

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _new_token() -> str:
    return secrets.token_hex(8)


def current() -> str:
    """The shared token; a new one when the cache holds none (so every process reloads)."""
    token = cache.get(GENERATION_KEY)
    if token is None:
        cache.add(GENERATION_KEY, _new_token(), timeout=None)  # one writer wins a race
        token = cache.get(GENERATION_KEY) or _new_token()
    return token


_serializer = RedisSerializer()
# The read of the token under way in each event loop: calls arriving meanwhile share it.
_reading: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task] = weakref.WeakKeyDictionary()


async def acurrent() -> str:
    """``current()`` for the asynchronous gateway: with Redis, one read on its asyncio
    client (the value Django's cache stored, decoded as Django does), shared by the calls
    that arrive while it is under way, so a burst of calls costs Redis one read, not one
    each; a caller that waits for nothing else still reads after its own arrival. The
    embedded default's cache is a local file, read as it is."""
    if not settings.REDIS_URL:
        return current()
    loop = asyncio.get_running_loop()
    reading = _reading.get(loop)
    if reading is None:
        reading = _reading[loop] = loop.create_task(_read_token())
        reading.add_done_callback(lambda _: _reading.pop(loop, None))
    return await asyncio.shield(reading)


async def _read_token() -> str:
    stored = await aredis.client().get(cache.make_and_validate_key(GENERATION_KEY))
    if stored is None:
        return await sync_to_async(current)()
    return _serializer.loads(stored)


def _set_new() -> None:
    cache.set(GENERATION_KEY, _new_token(), timeout=None)


def bump() -> None:
    """Invalidate every process's cached keys and routes, now and again after commit.

    The first bump serves readers inside this transaction; the second makes sure no
    reader keeps data it loaded between the first bump and the commit.
    """
    _set_new()
    transaction.on_commit(_set_new)


def for_request(request) -> str:
    """The token as of this request, read from the cache once however often it is asked."""
    django_request = getattr(request, "_request", request)
    token = getattr(django_request, "_modelbay_generation", None)
    if token is None:
        token = current()
        django_request._modelbay_generation = token
    return token


class GenerationCache(Generic[K, V]):
    """``load(key)`` once per key and token in this process.

    ``keep_missing``: whether a ``None`` from ``load`` is kept too (else asked again each
    time: unknown API key prefixes must not fill the memory). ``still_good(value)``: a value
    may also expire by itself (a subscription's billing period ends).
    """

    def __init__(
        self,
        load: Callable[[K], V | None],
        *,
        keep_missing: bool = True,
        still_good: Callable[[V], bool] | None = None,
        max_entries: int = 10_000,
    ):
        self._load = load
        self._keep_missing = keep_missing
        self._still_good = still_good
        self._max_entries = max_entries
        self._entries: dict[K, tuple[str, V | None]] = {}
        self._lock = threading.Lock()

    def get(self, key: K, *, gen: str) -> V | None:
        entry = self._entries.get(key)
        if entry is not None and entry[0] == gen and self._usable(entry[1]):
            return entry[1]
        value = self._load(key)
        if value is not None or self._keep_missing:
            with self._lock:
                if len(self._entries) >= self._max_entries:
                    self._entries.clear()
                self._entries[key] = (gen, value)
        return value

    async def aget(self, key: K, *, gen: str) -> V | None:
        """``get`` for asynchronous code: a value in memory at once, a load off the event
        loop (in the thread Django's database connections are used from)."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] == gen and self._usable(entry[1]):
            return entry[1]
        return await sync_to_async(self.get)(key, gen=gen)

    def _usable(self, value: V | None) -> bool:
        if value is None:
            return self._keep_missing
        return self._still_good is None or self._still_good(value)

    def forget(self, key: K) -> None:
        """Load this key again on its next ``get`` (found stale), whatever the token."""
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
