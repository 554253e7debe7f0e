"""One shared token that changes whenever keys or routing change.

The gateway keeps API keys and routing tables in process memory and reads only this
token from the shared cache on each call (one cache round trip). Whoever changes a key,
a service's traffic or an instance calls ``bump()``; every process then reloads what it
holds on its next call.
"""

import secrets

from django.core.cache import cache
from django.db import transaction

GENERATION_KEY = "modelbay:generation"


def current() -> str:
    return cache.get(GENERATION_KEY) or ""


def _set_new() -> None:
    cache.set(GENERATION_KEY, secrets.token_hex(8), timeout=None)


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
