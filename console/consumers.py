"""The console's live pages: one WebSocket per open page (``/ws/console/``), on the page's
session, scoped to the organization the user works in.

The socket tells the page which of the organization's services changed
(``{"type": "changed", "service": slug}``) and which apps' usage did (``{"type": "changed",
"app": slug}``: calls stored, for the app's subscribers and its publisher), from
``controlplane.events``; the page reloads what it shows of that service or app. A page may
also follow an instance's output: ``{"follow": "<instance id>"}`` sends the lines it prints
from then on
(``{"type": "log", "instance", "lines"}``), as ``tail -f`` does. A page whose socket closes
falls back to polling (``static/js/live.js``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from accounts import selectors as account_selectors
from accounts.middleware import SESSION_KEY
from controlplane import events, selectors
from controlplane.models import Instance

LOG_POLL_S = 1.0  # how often a followed instance's output is read
LOG_TAIL = 200  # lines read each time; more printed within LOG_POLL_S are cut to these


def new_lines(seen: list[str], now: list[str]) -> tuple[list[str], bool]:
    """The lines of ``now`` (an instance's last lines) that come after ``seen`` (the last
    lines read before), and whether they follow on (False: too much was printed meanwhile
    to tell where ``seen`` ended, or the output started again; ``now`` is all new)."""
    for overlap in range(min(len(seen), len(now)), 0, -1):
        if seen[-overlap:] == now[:overlap]:
            return now[overlap:], True
    return now, not seen


class ConsoleConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        self.organization_id = await self._organization_id()
        if self.organization_id is None:
            await self.close(code=4401)  # not signed in, or not a member any more
            return
        self.changes: asyncio.Task | None = None  # reading the shared cache, where the layer is not shared
        self.following: asyncio.Task | None = None  # an instance's output
        await self.accept()
        if events.layer_is_shared():
            await self.channel_layer.group_add(events.group(self.organization_id), self.channel_name)
        else:
            self.changes = asyncio.create_task(self._read_changes())
        await self.send_json({"type": "live"})

    async def disconnect(self, code):
        if getattr(self, "organization_id", None) is None:
            return
        for task in (self.changes, self.following):
            if task is not None:
                task.cancel()
        if events.layer_is_shared():
            await self.channel_layer.group_discard(events.group(self.organization_id), self.channel_name)

    async def receive_json(self, content, **kwargs):
        instance_id = content.get("follow") if isinstance(content, dict) else None
        if not isinstance(instance_id, str):
            return
        instance = await self._instance(instance_id)
        if instance is None:
            await self.send_json({"type": "error", "detail": f"No instance {instance_id} in this organization."})
            return
        if self.following is not None:
            self.following.cancel()  # one instance at a time
        self.following = asyncio.create_task(self._follow(instance))

    async def service_changed(self, event):
        """From the organization's group (``controlplane.events``)."""
        await self.send_json({"type": "changed", "service": event["service"]})

    async def app_changed(self, event):
        """From the organization's group (``controlplane.events``): an app's usage."""
        await self.send_json({"type": "changed", "app": event["app"]})

    async def _read_changes(self):
        """Where the channel layer is this process's alone: the shared cache's entry."""
        since = time.time()
        while True:
            await asyncio.sleep(events.POLL_S)
            changed, since = await database_sync_to_async(events.changed_since)(self.organization_id, since)
            for kind, slug in changed:
                await self.send_json({"type": "changed", kind: slug})

    async def _follow(self, instance: Instance):
        seen: list[str] = []
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                now = (await database_sync_to_async(_logs)(instance)).splitlines()
                lines, follows_on = new_lines(seen, now)
                if lines or not follows_on:
                    await self.send_json(
                        {"type": "log", "instance": instance.id, "lines": lines, "reset": not follows_on}
                    )
                seen = now
                await asyncio.sleep(LOG_POLL_S)

    @database_sync_to_async
    def _organization_id(self) -> int | None:
        user = self.scope.get("user")
        session = self.scope.get("session")
        if user is None or not user.is_authenticated or session is None:
            return None
        organization_id = session.get(SESSION_KEY)
        if (
            organization_id is None
            or account_selectors.membership_for(user=user, organization_id=organization_id) is None
        ):
            return None
        return organization_id

    @database_sync_to_async
    def _instance(self, instance_id: str) -> Instance | None:
        return (
            Instance.objects.filter(pk=instance_id, deployment__service__organization_id=self.organization_id)
            .select_related("deployment__service")
            .first()
        )


def _logs(instance: Instance) -> str:
    return selectors.instance_logs(instance=instance, tail=LOG_TAIL)
