"""Changes the console's open pages follow live (``console.consumers``): a service's status,
instances, replicas, traffic split, release steps and autoscaler decisions.

An event names the organization and the service (its slug); a page that shows the service
reloads what it shows of it. Events go out after the transaction that made the change
commits, so a page never reloads before the change is there to see.

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

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.db import transaction

logger = logging.getLogger(__name__)

POLL_S = 0.5  # how often a socket reads its organization's entry, where the layer is not shared
_ENTRY_KEY = "mb:live:org:{}"
_ENTRY_SERVICES = 200  # services remembered per organization entry (the most recently changed)


def group(organization_id: int) -> str:
    return f"console.org.{organization_id}"


def layer_is_shared() -> bool:
    """Whether the channel layer carries messages between processes (not the in-memory one)."""
    return "InMemoryChannelLayer" not in settings.CHANNEL_LAYERS["default"]["BACKEND"]


def service_changed(organization_id: int, slug: str) -> None:
    """Tell the organization's open pages that the service changed, once this transaction
    commits (at once outside one)."""
    transaction.on_commit(lambda: publish(organization_id, slug))


def publish(organization_id: int, slug: str) -> None:
    """Tell the organization's open pages now (``service_changed``: after commit)."""
    try:
        if layer_is_shared():
            send = async_to_sync(get_channel_layer().group_send)
            message = (group(organization_id), {"type": "service.changed", "service": slug})
            if _on_event_loop():  # async_to_sync cannot run here: from a thread of its own
                threading.Thread(target=send, args=message, daemon=True).start()
            else:
                send(*message)
        else:
            key = _ENTRY_KEY.format(organization_id)
            entry = cache.get(key) or {}
            entry[slug] = time.time()
            if len(entry) > _ENTRY_SERVICES:
                entry = dict(sorted(entry.items(), key=lambda item: item[1])[-_ENTRY_SERVICES:])
            cache.set(key, entry, timeout=3600)
    except Exception:  # a page that is not told reloads by itself later: never fail the change
        logger.warning("could not tell the console that %s changed", slug, exc_info=True)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def changed_since(organization_id: int, since: float) -> tuple[list[str], float]:
    """Where the layer is not shared: the services changed after ``since`` (a time from
    an earlier call), and the time to pass next."""
    entry = cache.get(_ENTRY_KEY.format(organization_id)) or {}
    changed = [slug for slug, at in entry.items() if at > since]
    return changed, max([since, *entry.values()])
