"""Values kept in process memory, rebuilt when one shared token moves.

The gateway keeps API keys, routing tables and app access in process memory and reads
only this token from the shared cache on each call (one cache round trip). Whoever
changes a key, a service's traffic, an instance or a subscription calls ``bump()``;
every process then reloads what it holds on its next call. :class:`GenerationCache` is
the one implementation of "a value per process, rebuilt when the token moves".

A missing token (evicted, the cache flushed or restarted) means "reload": a new token is
set, so nothing loaded before can match it. It never means "what is cached still holds".

When the token cannot be read (Redis away: refused, reset, timed out), calls go on: a
process uses the last token it read for up to MODELBAY_CACHE_STALE_S, then a token of its
own that moves every MODELBAY_CACHE_STALE_S, so what it holds is loaded again from the
database once per that bound (a key revoked meanwhile is refused within it). A thread of
the process tries the cache again every RETRY_S; when it answers, the process sets a new
shared token (bumps lost meanwhile reach every process) and uses the shared one again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.core.cache.backends.redis import RedisSerializer
from django.db import InterfaceError, OperationalError, connection, transaction

from modelbay.core import aredis
from modelbay.core.background import Flusher
from modelbay.core.cache import CACHE_ERRORS, RETRY_S, Outage, strict

logger = logging.getLogger(__name__)

GENERATION_KEY = "modelbay:generation"

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _new_token() -> str:
    return secrets.token_hex(8)


class _Token:
    """The shared token as this process last read it, and what stands in for it while
    the cache cannot be read."""

    def __init__(self):
        self.value: str | None = None
        self.read_at = 0.0  # time.monotonic()
        self.outage = Outage("The shared cache (generation token)")

    def read(self, value: str) -> str:
        self.value, self.read_at = value, time.monotonic()
        return value

    def unreadable(self, error: Exception) -> str:
        self.outage.failed(error)
        _prober.wake()
        return self.stand_in()

    def stand_in(self) -> str:
        """The last token read, up to MODELBAY_CACHE_STALE_S after it was read; then one of
        this process's own, which moves every MODELBAY_CACHE_STALE_S."""
        bound = settings.MODELBAY_CACHE_STALE_S
        now = time.monotonic()
        if self.value is not None and now - self.read_at < bound:
            return self.value
        return f"offline-{int(now // bound)}"


_token = _Token()


def current() -> str:
    """The shared token; a new one when the cache holds none (so every process reloads);
    a stand-in while the cache cannot be read."""
    if _token.outage.since is not None:
        return _token.stand_in()
    return _read()


def _read() -> str:
    renew = _token.outage.since is not None
    try:
        token = _read_or_renew(renew=renew)
    except CACHE_ERRORS as error:
        return _token.unreadable(error)
    if renew:
        _token.outage.passed()
    return _token.read(token)


def _read_or_renew(*, renew: bool) -> str:
    """The shared token: a new one when the cache holds none, or when ``renew`` (back from
    an outage, during which bumps may have been lost). Raises CACHE_ERRORS."""
    shared = strict(cache)
    if renew:
        token = _new_token()
        shared.set(GENERATION_KEY, token, timeout=None)
        return token
    token = shared.get(GENERATION_KEY)
    if token is None:
        shared.add(GENERATION_KEY, _new_token(), timeout=None)  # one writer wins a race
        token = shared.get(GENERATION_KEY) or _new_token()
    return token


def _probe() -> None:
    """While the cache is away, try it again (the prober's round, every RETRY_S)."""
    if _token.outage.since is not None:
        _read()


_prober = Flusher("generation-token", _probe, every_s=RETRY_S)

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
    if _token.outage.since is not None:
        return _token.stand_in()
    loop = asyncio.get_running_loop()
    reading = _reading.get(loop)
    if reading is None:
        reading = _reading[loop] = loop.create_task(_read_token())
        reading.add_done_callback(lambda _: _reading.pop(loop, None))
    return await asyncio.shield(reading)


async def _read_token() -> str:
    try:
        stored = await aredis.client().get(cache.make_and_validate_key(GENERATION_KEY))
    except CACHE_ERRORS as error:
        return _token.unreadable(error)
    if stored is None:
        return await sync_to_async(_read, thread_sensitive=False)()
    return _token.read(_serializer.loads(stored))


def _set_new() -> None:
    try:
        strict(cache).set(GENERATION_KEY, _new_token(), timeout=None)
    except CACHE_ERRORS as error:
        # The write goes on: other processes reload within MODELBAY_CACHE_STALE_S, and
        # this one sets a new token when the cache answers again.
        logger.warning("A change could not move the generation token (%s)", error)
        _token.unreadable(error)


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
        return await sync_to_async(self._get_outside_requests)(key, gen)

    def _get_outside_requests(self, key: K, gen: str) -> V | None:
        try:
            return self.get(key, gen=gen)
        except (OperationalError, InterfaceError):
            # The gateway's loads run outside Django's requests, whose ends would drop a
            # connection the database closed (a restart): drop it here and load once more,
            # on a new connection. With none to be had, the error stands (503).
            if connection.connection is None or connection.in_atomic_block:
                raise
            connection.close()
            return self.get(key, gen=gen)

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
