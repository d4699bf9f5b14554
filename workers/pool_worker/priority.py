"""Priority levels in the fetch loop: free slots go to waiting high tasks first, then normal, then low.

Each level has its own subject and durable consumer (`workers.engine.topology`). Normal tasks keep the
pool's first consumer, and while no high or low task waits the fetch loop long-polls it alone, as a pool
without priorities always did: no extra request per message.

How the worker knows that another level has work, without asking it on every fetch:

- a core-NATS subscription to the high and low subjects: JetStream stores the message and core NATS
  hands each subscriber a copy as it is published, so the worker hears of a new high or low task at once
  (a pool that only ever sees normal tasks gets nothing on it);
- the consumers' pending counts, read when the worker starts and then every `POLL_IDLE_S` (every
  `POLL_ACTIVE_S` once this worker has seen another level), for what no publish announces: messages
  published while the worker was down, and retries coming back after their backoff.

While a level is known to wait, each fetch asks the levels in order for the free slots, with a short
wait each. Whether a level still waits afterwards is read from the last message it handed over (JetStream
writes the consumer's pending count into each delivery), or, when it handed over none, from its
consumer's info: a fetch that timed out on a loaded machine is no proof that the level is empty. A level
announced while its fetch or its info was in flight stays waiting.

What it cannot do: a level is strict, so low tasks wait while high or normal ones keep coming
(starvation by design), and a task already fetched runs to its end (no preemption). A high task that
arrives while an idle worker long-polls the normal level waits for that poll to end: `long_poll_s`,
shortened to `LONG_POLL_SEEN_S` once the worker has seen another level.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from neutrino.app import PRIORITIES
from workers.engine.topology import NORMAL, OTHER_PRIORITIES, STREAM, consumer_name, pool_subject
from workers.pool_worker.state import StopFlags

logger = logging.getLogger("neutrino.worker")

LEVEL_FETCH_TIMEOUT_S = 0.05  # a level believed to wait answers within this (it is empty otherwise)
POLL_IDLE_S = 5.0  # the pending counts, while this worker has seen no other level than normal
POLL_ACTIVE_S = 0.25  # ... and once it has
LONG_POLL_IDLE_S = 1.0  # the normal long poll (fetch.FETCH_TIMEOUT_S) ...
LONG_POLL_SEEN_S = 0.2  # ... shortened once high or low tasks came, so they wait for it less


class PriorityLevels:
    """The high and low consumers of one pool beside its normal one, and what is known to wait in each."""

    def __init__(self, *, pool: str) -> None:
        self.pool = pool
        self.psubs: dict[str, JetStreamContext.PullSubscription] = {}
        self.waiting: dict[str, bool] = dict.fromkeys(PRIORITIES, False)
        # Publishes heard per level: a "nothing waits" read while one came in must not clear the level.
        self.announced: dict[str, int] = dict.fromkeys(PRIORITIES, 0)
        self.seen = False  # a high or low task came to this pool since the worker started
        self.js: JetStreamContext | None = None

    @property
    def active(self) -> bool:
        """A high or low task is believed to wait: fetch level by level instead of long-polling normal."""
        return any(self.waiting[level] for level in OTHER_PRIORITIES)

    @property
    def long_poll_s(self) -> float:
        return LONG_POLL_SEEN_S if self.seen else LONG_POLL_IDLE_S

    async def set_up(self, nc: Client, js: JetStreamContext) -> None:
        """Bind the high and low consumers (made by `ensure_topology`), listen for their publishes, and
        read what already waits."""
        self.js = js
        for level in OTHER_PRIORITIES:
            self.psubs[level] = await js.pull_subscribe_bind(durable=consumer_name(self.pool, level), stream=STREAM)
            await nc.subscribe(pool_subject(self.pool, level), cb=self._announced(level))
        await self.poll(js)

    async def stop_deliveries(self) -> None:
        """No more deliveries of any level (as `NatsConnection.stop_deliveries` for normal): a pull
        subscription left subscribed would hold the connection's drain until its timeout."""
        for psub in self.psubs.values():
            try:
                await psub.unsubscribe()
            except Exception as exc:
                logger.debug("unsubscribe: %s", exc)

    def _announced(self, level: str) -> Callable[[Msg], Awaitable[None]]:
        async def on_publish(msg: Msg) -> None:
            self.announced[level] += 1
            self.waiting[level] = True
            self.seen = True
        return on_publish

    async def poll(self, js: JetStreamContext) -> None:
        """Read each level's pending count (what no publish announced: a retry back from its backoff)."""
        for level in PRIORITIES:
            heard = self.announced[level]
            try:
                pending = await self._pending(js, level)
            except NotFoundError:
                continue
            self._note(level, waiting=pending > 0, heard=heard)
            if pending and level != NORMAL:
                self.seen = True

    async def _pending(self, js: JetStreamContext, level: str) -> int:
        info = await js.consumer_info(STREAM, consumer_name(self.pool, level))
        return int(info.num_pending or 0)

    def _note(self, level: str, *, waiting: bool, heard: int) -> None:
        """What a read found, unless a publish announced since the read began says more."""
        if waiting or self.announced[level] == heard:
            self.waiting[level] = waiting

    async def poll_loop(self, js: JetStreamContext, stop: StopFlags) -> None:
        while not stop.requested.is_set():
            if await stop.sleep(POLL_ACTIVE_S if self.seen else POLL_IDLE_S):
                return
            try:
                await self.poll(js)
            except Exception as exc:  # NATS reconnecting: the next poll tries again
                logger.debug("priority poll of pool %s: %s", self.pool, exc)

    async def fetch(self, free: int, normal: JetStreamContext.PullSubscription) -> list[Msg]:
        """Up to `free` messages, from the highest level believed to wait down."""
        msgs: list[Msg] = []
        for level in PRIORITIES:
            need = free - len(msgs)
            if need <= 0:
                break
            if not self.waiting[level]:
                continue
            psub = normal if level == NORMAL else self.psubs[level]
            heard = self.announced[level]
            try:
                got = await psub.fetch(need, timeout=LEVEL_FETCH_TIMEOUT_S)
            except nats.errors.TimeoutError:
                got = []
            if got:
                self._note(level, waiting=got[-1].metadata.num_pending > 0, heard=heard)
            elif self.js is not None:
                self._note(level, waiting=await self._pending(self.js, level) > 0, heard=heard)
            msgs.extend(got)
        return msgs
