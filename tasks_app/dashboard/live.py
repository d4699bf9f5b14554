"""Task events from NATS to the dashboard's websockets, in batches.

    NATS neutrino.events.task --> EventRelay (one per ASGI process) --every BATCH_S--> group "dashboard.tasks"
        --> each TaskEventsConsumer (one per browser) --> renders and sends one htmx OOB payload

Log events (`neutrino.events.log.*`: a task's log grew) take the same way as "logs.changed": a task page
that shows the task appends the new lines.

The relay is started lazily by the first websocket that connects, on the ASGI server's event loop,
with its own nats-py connection (NEUTRINO_NATS_URL). It gathers the ids of changed tasks for
BATCH_S and sends the group one message with all of them, so a burst of a thousand events a second
costs each browser a few messages a second, each rendered from the database (never counted up on
the client, so the counters cannot drift).

What it cannot do: events published while NATS is unreachable are lost (core NATS keeps nothing).
The page still shows the truth on its next update or reload, because every update is read from the
database; on reconnect each socket is sent the current state at once.
"""

from __future__ import annotations

import asyncio
import json
import logging

from channels.layers import BaseChannelLayer, get_channel_layer
from nats.aio.client import Client
from nats.aio.msg import Msg

from workers.engine.broker.connect import connect
from workers.engine.topology import EVENTS_SUBJECT, LOG_EVENTS_SUBJECT

logger = logging.getLogger("neutrino.live")

GROUP = "dashboard.tasks"
BATCH_S = 0.3
# A batch carries at most this many ids; past it, it says "many changed" and each page re-renders.
BATCH_MAX_IDS = 1000
CONNECT_TIMEOUT_S = 2


class EventRelay:
    """One NATS subscription for the whole process, relayed to the channel layer group in batches."""

    def __init__(self, url: str, layer: BaseChannelLayer, *, batch_s: float = BATCH_S) -> None:
        self.url = url
        self.layer = layer
        self.batch_s = batch_s
        self.loop = asyncio.get_running_loop()
        self._nc: Client | None = None
        self._pending: set[str] = set()
        self._logs_pending: set[str] = set()  # tasks whose log grew
        self._overflow = False
        self._flush_task: asyncio.Task[None] | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def start(self) -> None:
        self._connect_task = self.loop.create_task(self._connect_forever(), name="neutrino-live-connect")

    async def _connect_forever(self) -> None:
        nc = await connect(self.url, name="neutrino-dashboard", logger=logger, connect_timeout_s=CONNECT_TIMEOUT_S)
        assert nc is not None  # no `until`: it returns once connected (close() cancels this task)
        await nc.subscribe(EVENTS_SUBJECT, cb=self._on_message)
        await nc.subscribe(LOG_EVENTS_SUBJECT, cb=self._on_log_message)
        await nc.flush(timeout=CONNECT_TIMEOUT_S)
        self._nc = nc
        logger.info("live updates: subscribed to %s on %s", EVENTS_SUBJECT, self.url)

    async def _on_message(self, msg: Msg) -> None:
        try:
            task_id = json.loads(msg.data).get("task_id")
        except (ValueError, AttributeError):
            return
        if not isinstance(task_id, str):
            return
        if len(self._pending) < BATCH_MAX_IDS:
            self._pending.add(task_id)
        else:
            self._overflow = True
        self._flush_soon()

    async def _on_log_message(self, msg: Msg) -> None:
        """A task's log grew: task pages showing it append the new lines (batched like task events)."""
        try:
            task_id = json.loads(msg.data).get("task_id")
        except (ValueError, AttributeError):
            return
        if isinstance(task_id, str) and len(self._logs_pending) < BATCH_MAX_IDS:
            self._logs_pending.add(task_id)
            self._flush_soon()

    def _flush_soon(self) -> None:
        if self._flush_task is None:
            self._flush_task = self.loop.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        try:
            await asyncio.sleep(self.batch_s)
        finally:
            self._flush_task = None
        task_ids, overflow = sorted(self._pending), self._overflow
        logs = sorted(self._logs_pending)
        self._pending, self._overflow, self._logs_pending = set(), False, set()
        if task_ids or overflow:
            # `task_ids: None` tells each page that more changed than a batch lists: re-render.
            await self.layer.group_send(GROUP, {"type": "tasks.changed", "task_ids": None if overflow else task_ids})
        if logs:
            await self.layer.group_send(GROUP, {"type": "logs.changed", "task_ids": logs})

    async def close(self) -> None:
        self._closed = True
        for task in (self._connect_task, self._flush_task):
            if task is not None and not task.done():
                task.cancel()
        if self._nc is not None:
            try:
                await self._nc.close()
            except Exception:
                pass
            self._nc = None


_relay: EventRelay | None = None


async def ensure_relay(url: str) -> EventRelay | None:
    """The process's relay, started on this event loop if it is not running yet. None without a NATS URL."""
    global _relay
    if not url:
        return None
    loop = asyncio.get_running_loop()
    if _relay is not None and (_relay.loop is not loop or _relay.url != url or _relay.loop.is_closed()):
        old, _relay = _relay, None
        if old.loop is loop:
            await old.close()
    if _relay is None:
        layer = get_channel_layer()
        if layer is None:
            raise RuntimeError("CHANNEL_LAYERS is not configured; the dashboard needs a channel layer")
        _relay = EventRelay(url, layer)
        _relay.start()
    return _relay


async def stop_relay() -> None:
    """Close the process's relay (tests; a server's shutdown)."""
    global _relay
    relay, _relay = _relay, None
    if relay is not None and relay.loop is asyncio.get_running_loop():
        await relay.close()

