"""The fetch loop: pulls as many messages as the worker has room for (`Slots.room`) and hands each to its own
task, with the `SlotTicket` that task claims its row under."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from workers.engine.topology import consumer_name
from workers.pool_worker.priority import PriorityLevels
from workers.pool_worker.settle import settle
from workers.pool_worker.state import Slots, SlotTicket, StopFlags

logger = logging.getLogger("neutrino.worker")

FETCH_TIMEOUT_S = 1.0  # one pull request waits this long for messages


class Fetcher:
    """Feeds `handle` the messages the worker has room for until the worker stops.

    `handlers` are the message tasks still running; the worker waits for them when it stops. A fetch
    that fails because the stream or consumer is gone re-creates them (`ensure_topology`); other
    failures (reconnecting, closed connection) are retried with a growing pause.
    """

    def __init__(self, *, pool: str, slots: Slots, stop: StopFlags,
                 handle: Callable[[Msg, SlotTicket], Coroutine[Any, Any, None]],
                 ensure_topology: Callable[[], Awaitable[None]]) -> None:
        self.pool = pool
        self.slots = slots
        # Handlers that gave their slot back but still write their outcome: a database that is slow to
        # answer must not let them pile up without end.
        self.max_handlers = 4 * slots.concurrency
        self.stop = stop
        self.handle = handle
        self.ensure_topology = ensure_topology
        self.handlers: set[asyncio.Task[None]] = set()
        self.slot_freed = asyncio.Event()
        self.levels: PriorityLevels | None = None  # the high and low consumers, once bound

    def wake(self) -> None:
        """Wake a loop waiting for a free slot (the worker is stopping)."""
        self.slot_freed.set()

    async def run(self, psub: JetStreamContext.PullSubscription) -> None:
        failures = 0
        while not self.stop.requested.is_set():
            free = min(self.slots.room(), self.max_handlers - len(self.handlers))
            if free <= 0:
                self.slot_freed.clear()
                await self.slot_freed.wait()
                continue
            try:
                if self.levels is not None and self.levels.active:
                    msgs = await self.levels.fetch(free, psub)  # high first (workers.pool_worker.priority)
                else:
                    msgs = await psub.fetch(free, timeout=FETCH_TIMEOUT_S if self.levels is None
                                            else self.levels.long_poll_s)
            except TimeoutError:  # nats' own and asyncio's: nothing came within the wait (not a failure)
                failures = 0
                continue
            except (nats.js.errors.NotFoundError, nats.js.errors.ServiceUnavailableError) as exc:
                # The stream or consumer is gone (a broker that lost its store) or JetStream restarts.
                failures += 1
                logger.warning("fetch from %s failed (%s); checking the stream and consumer",
                               consumer_name(self.pool), exc)
                if await self.stop.sleep(min(0.5 * failures, 5.0)):
                    break
                try:
                    await self.ensure_topology()
                except Exception as again:
                    logger.debug("topology not ready yet: %s", again)
                continue
            except Exception as exc:  # reconnecting, connection closed, no responders
                failures += 1
                log = logger.warning if failures in (1, 10) or failures % 100 == 0 else logger.debug
                log("fetch from %s failed (%s: %s); retrying", consumer_name(self.pool), type(exc).__name__, exc)
                if await self.stop.sleep(min(0.2 * failures, 2.0)):
                    break
                continue
            failures = 0
            for msg in msgs:
                if self.stop.requested.is_set():
                    await settle(msg, "nak")  # fetched as the worker stopped: another worker takes it
                    continue
                handler = asyncio.create_task(self.handle(msg, SlotTicket(self.slots, self.slot_freed.set)))
                self.handlers.add(handler)
                handler.add_done_callback(self._handler_done)

    def _handler_done(self, handler: asyncio.Task[None]) -> None:
        self.handlers.discard(handler)
        self.slot_freed.set()
        if not handler.cancelled() and handler.exception() is not None:
            logger.error("message handler failed", exc_info=handler.exception())
