"""Who is calling, and for which organization.

Both authenticators give ``request.auth`` an :class:`AuthContext`; views read the
organization from it and nothing else. API keys are checked on every call, so their
lookups live in process memory, invalidated through :mod:`modelbay.core.generation`.
"""

import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils import timezone
from rest_framework import authentication, exceptions

from accounts import keys, selectors, services
from accounts.choices import ALL_SCOPES
from modelbay.core import generation
from modelbay.core.background import Flusher
from modelbay.core.generation import GenerationCache


@dataclass(frozen=True)
class AuthContext:
    """The organization a request acts for, and what it may do there."""

    organization_id: int
    organization_slug: str
    scopes: frozenset[str]
    api_key_id: int | None = None


@dataclass(frozen=True)
class _CachedKey:
    api_key_id: int
    secret_hash: str
    context: AuthContext
    expires_at: datetime | None
    revoked: bool


class KeyPrincipal:
    """``request.user`` for a call made with an API key (not a person)."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, context: AuthContext):
        self.context = context

    def __str__(self):
        return f"api-key:{self.context.api_key_id}"


_last_touched: dict[int, float] = {}


def _load_key(prefix: str) -> _CachedKey | None:
    api_key = selectors.api_key_by_prefix(prefix=prefix)
    if api_key is None:
        return None
    context = AuthContext(
        organization_id=api_key.organization_id,
        organization_slug=api_key.organization.slug,
        scopes=frozenset(api_key.scopes),
        api_key_id=api_key.pk,
    )
    return _CachedKey(api_key.pk, api_key.secret_hash, context, api_key.expires_at, api_key.revoked_at is not None)


# Unknown prefixes are not kept: random ones must not fill the memory.
_key_cache: GenerationCache[str, _CachedKey] = GenerationCache(_load_key, keep_missing=False)


def _touch(api_key_id: int) -> None:
    """Note ``last_used_at`` at most once per interval per process, not per call; the
    flusher thread writes it (a request never waits on the database for it)."""
    now = time.monotonic()
    if now - _last_touched.get(api_key_id, -1e9) < settings.MODELBAY_KEY_TOUCH_INTERVAL:
        return
    _last_touched[api_key_id] = now
    _touches[api_key_id] = timezone.now()
    touch_flusher.wake()


def flush_touches() -> None:
    """Store the noted ``last_used_at`` times (kept for the next round if that fails)."""
    while _touches:
        api_key_id, when = _touches.popitem()
        try:
            services.api_key_touch(api_key_id=api_key_id, when=when)
        except Exception:
            _touches.setdefault(api_key_id, when)
            raise


_touches: dict[int, datetime] = {}
touch_flusher = Flusher("key-use", flush_touches)


def authenticate_key(full_key: str, *, gen: str) -> AuthContext:
    """The context of a valid key; raises AuthenticationFailed otherwise.

    ``gen`` is the current generation token (see modelbay.core.generation).
    """
    prefix, secret = _split(full_key)
    return _accept(_key_cache.get(prefix, gen=gen), secret)


async def aauthenticate_key(full_key: str, *, gen: str) -> AuthContext:
    """``authenticate_key`` for the asynchronous gateway (a key not in memory is loaded
    off the event loop)."""
    prefix, secret = _split(full_key)
    return _accept(await _key_cache.aget(prefix, gen=gen), secret)


def _split(full_key: str) -> tuple[str, str]:
    parts = keys.split(full_key)
    if parts is None:
        raise exceptions.AuthenticationFailed("Malformed API key.")
    return parts


def _accept(cached: _CachedKey | None, secret: str) -> AuthContext:
    if cached is None or not keys.secret_matches(secret, cached.secret_hash):
        raise exceptions.AuthenticationFailed("Unknown API key.")
    if cached.revoked:
        raise exceptions.AuthenticationFailed("This API key has been revoked.")
    if cached.expires_at is not None and cached.expires_at <= timezone.now():
        raise exceptions.AuthenticationFailed("This API key has expired.")
    _touch(cached.api_key_id)
    return cached.context


def bearer_key(header: str) -> str:
    """The key in an ``Authorization: Bearer <key>`` header; AuthenticationFailed otherwise."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != ApiKeyAuthentication.keyword:
        raise exceptions.AuthenticationFailed("Use 'Authorization: Bearer <api key>'.")
    token = token.strip()
    if not token:
        raise exceptions.AuthenticationFailed("The Authorization header holds no key.")
    return token


WWW_AUTHENTICATE = 'Bearer realm="modelbay"'


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer mb_<prefix>_<secret>``."""

    keyword = "bearer"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        context = authenticate_key(bearer_key(header), gen=generation.for_request(request))
        return KeyPrincipal(context), context

    def authenticate_header(self, request):
        return WWW_AUTHENTICATE


class ConsoleSessionAuthentication(authentication.SessionAuthentication):
    """The console's session cookie (with CSRF), acting for the user's current organization."""

    def enforce_csrf(self, request):
        # Check the Django request: DRF's request.POST would parse the body with the
        # view's parsers, and the gateway views have none (they forward the raw body).
        super().enforce_csrf(request._request)

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None:
            return None
        user, _ = result
        organization = getattr(request._request, "organization", None)
        if not organization:
            raise exceptions.PermissionDenied("You are not a member of any organization.")
        context = AuthContext(
            organization_id=organization.pk,
            organization_slug=organization.slug,
            scopes=frozenset(ALL_SCOPES),
        )
        return user, context
