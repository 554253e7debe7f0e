"""Django's cache when Redis is away: requests go on without it.

With ``REDIS_URL`` the default cache is :class:`FailSoftRedisCache`: while Redis does not
answer, what uses it through Django's API (allauth's rate limits, anything cached on a
request's way) finds a miss, and its writes are skipped and answered as if done (a lock
taken with ``add`` is had), instead of a 500; a rate limit kept there lets calls through
meanwhile. Whoever must tell a miss from an outage (the generation token,
``modelbay.core.generation``) reads through :func:`strict`, which raises instead.
"""

from __future__ import annotations

import logging
import time

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.cache.backends.redis import RedisCache
from django.utils.functional import cached_property
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# What a cache that is away raises: the Redis client's errors (refused, timed out, reset),
# or the file cache's (a full or unreadable disk).
CACHE_ERRORS = (RedisError, OSError)

# While a server is known to be away, how often one caller tries it again (the others
# do without it meanwhile), so that an outage costs no connection attempt per request.
RETRY_S = 0.5


class Outage:
    """Whether a shared server answers, as this process last found it: logged once when
    it goes away and once when it is back, not at every request."""

    def __init__(self, what: str):
        self.what = what
        self.since: float | None = None  # time.monotonic() of the first failure; None: it answers
        self._next_try = 0.0

    def failed(self, error: Exception) -> None:
        now = time.monotonic()
        self._next_try = now + RETRY_S
        if self.since is None:
            self.since = now
            logger.warning("%s does not answer (%s); going on without it", self.what, error)

    def passed(self) -> None:
        if self.since is not None:
            logger.warning("%s answers again after %.1f s", self.what, time.monotonic() - self.since)
            self.since = None

    def skipping(self) -> bool:
        """Whether to do without the server now: while it is away, except once per RETRY_S."""
        if self.since is None:
            return False
        now = time.monotonic()
        if now < self._next_try:
            return True
        self._next_try = now + RETRY_S
        return False


class FailSoftRedisCache(RedisCache):
    """Django's Redis cache whose reads answer a miss, and whose writes are skipped and
    answered as if done, while Redis does not answer (see :class:`Outage`)."""

    def __init__(self, server, params):
        super().__init__(server, params)
        self._server, self._params = server, params
        self.outage = Outage("Redis (Django's cache)")

    @cached_property
    def strict(self) -> RedisCache:
        """The same cache (same server, options and keys), raising when Redis does not answer."""
        return RedisCache(self._server, self._params)

    def _soft(self, operation, fallback, *args, **kwargs):
        if self.outage.since is not None and self.outage.skipping():
            return fallback
        try:
            result = operation(*args, **kwargs)
        except CACHE_ERRORS as error:
            self.outage.failed(error)
            return fallback
        if self.outage.since is not None:
            self.outage.passed()
        return result

    def get(self, key, default=None, version=None):
        return self._soft(super().get, default, key, default, version)

    def get_many(self, keys, version=None):
        return self._soft(super().get_many, {}, keys, version)

    def has_key(self, key, version=None):
        return self._soft(super().has_key, False, key, version)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self._soft(super().add, True, key, value, timeout, version)

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self._soft(super().set, None, key, value, timeout, version)

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        return self._soft(super().set_many, [], data, timeout, version)

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        return self._soft(super().touch, True, key, timeout, version)

    def incr(self, key, delta=1, version=None):
        # As if the count started over from nothing.
        return self._soft(super().incr, delta, key, delta, version)

    def delete(self, key, version=None):
        return self._soft(super().delete, True, key, version)

    def delete_many(self, keys, version=None):
        return self._soft(super().delete_many, None, keys, version)

    def clear(self):
        return self._soft(super().clear, True)


def strict(cache: BaseCache) -> BaseCache:
    """``cache`` raising its errors (:data:`CACHE_ERRORS`) rather than doing without."""
    return getattr(cache, "strict", cache)
