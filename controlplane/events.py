"""Changes the console's open pages follow live (``console.consumers``): a service's status,
instances, replicas, traffic split, release steps and autoscaler decisions; and an app's
metered usage (``marketplace.metering``: its calls stored, for its subscribers and publisher).

An event names the organization and what changed: a service or an app (its slug); a page
that shows it reloads what it shows of it. Events go out after the transaction that made
the change commits, so a page never reloads before the change is there to see.

- Where the channel layer reaches every process (Redis, in production), an event is sent
  to the organization's group at once.
- On the embedded default the layer lives in one process, and the worker is another: an
  event moves the organization's entry in the shared cache (a file on this host), which
  every open socket of that organization reads each ``POLL_S``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.db import transaction

logger = logging.getLogger(__name__)

POLL_S = 0.5  # how often a socket reads its organization's entry, where the layer is not shared
_ENTRY_KEY = "mb:live:org:{}"
_ENTRY_SERVICES = 200  # services and apps remembered per organization entry (the most recently changed)
KINDS = ("service", "app")  # what an event names


def group(organization_id: int) -> str:
    return f"console.org.{organization_id}"


def layer_is_shared() -> bool:
    """Whether the channel layer carries messages between processes (not the in-memory one)."""
    return "InMemoryChannelLayer" not in settings.CHANNEL_LAYERS["default"]["BACKEND"]


def service_changed(organization_id: int, slug: str) -> None:
    """Tell the organization's open pages that the service changed, once this transaction
    commits (at once outside one)."""
    transaction.on_commit(lambda: publish(organization_id, slug))


def app_usage_changed(changes: Iterable[tuple[int, str]]) -> None:
    """Tell each ``(organization id, app slug)``'s open pages that the app's usage changed,
    once this transaction commits, from a thread of its own: the caller (the metering flush
    of a gateway process) never waits on the channel layer or the cache, nor fails by them."""
    changes = sorted(set(changes))
    if changes:
        transaction.on_commit(lambda: _in_background(changes), robust=True)


def _in_background(changes: list[tuple[int, str]]) -> None:
    def tell():
        for organization_id, slug in changes:
            publish(organization_id, slug, kind="app")

    try:
        threading.Thread(target=tell, name="live-usage", daemon=True).start()
    except Exception:  # no thread to be had: the pages' next reload shows the calls
        logger.warning("could not tell the console that apps' usage changed", exc_info=True)


def publish(organization_id: int, slug: str, *, kind: str = "service") -> None:
    """Tell the organization's open pages now (``service_changed``: after commit) that the
    service (``kind="service"``) or the app's usage (``kind="app"``) changed."""
    try:
        if layer_is_shared():
            send = async_to_sync(get_channel_layer().group_send)
            message = (group(organization_id), {"type": f"{kind}.changed", kind: slug})
            if _on_event_loop():  # async_to_sync cannot run here: from a thread of its own
                threading.Thread(target=send, args=message, daemon=True).start()
            else:
                send(*message)
        else:
            key = _ENTRY_KEY.format(organization_id)
            entry = cache.get(key) or {}
            entry[f"{kind}:{slug}"] = time.time()
            if len(entry) > _ENTRY_SERVICES:
                entry = dict(sorted(entry.items(), key=lambda item: item[1])[-_ENTRY_SERVICES:])
            cache.set(key, entry, timeout=3600)
    except Exception:  # a page that is not told reloads by itself later: never fail the change
        logger.warning("could not tell the console that %s %s changed", kind, slug, exc_info=True)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def changed_since(organization_id: int, since: float) -> tuple[list[tuple[str, str]], float]:
    """Where the layer is not shared: what changed after ``since`` (a time from an earlier
    call), as ``(kind, slug)`` pairs (kind: ``"service"`` or ``"app"``), and the time to pass next."""
    entry = cache.get(_ENTRY_KEY.format(organization_id)) or {}
    changed = []
    for key, at in entry.items():
        kind, _, slug = key.partition(":")
        if at > since and kind in KINDS:
            changed.append((kind, slug))
    return changed, max([since, *entry.values()])
