"""The worker's NATS connection: connecting however long NATS takes to come up, and setting up the stream,
this pool's consumer, the pull subscription and the control subscriptions on it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from neutrino.app import PRIORITIES
from pools_app.selectors import nats_pool_names
from tasks_app.core.conf import NeutrinoSettings
from workers.engine.broker.connect import connect, shown
from workers.engine.objects import ensure_bucket
from workers.engine.topology import (
    CANCEL_SUBJECT,
    MAX_DELIVERIES_ADVISORY,
    STREAM,
    ConsumerSettings,
    consumer_name,
    ensure_consumer,
    ensure_stream,
)
from workers.pool_worker.db import db
from workers.pool_worker.state import StopFlags

logger = logging.getLogger("neutrino.worker")

DRAIN_TIMEOUT_S = 5.0


class NatsConnection:
    """Owns the worker's NATS client (`nc`, `js`) and pull subscription (`psub`) from connect to drain.

    A NATS outage is not an error: the first connect and every reconnect are retried forever (logged at
    most every 5 s), and only a stop request ends the waiting.
    """

    def __init__(self, *, pool: str, worker_id: str, conf: NeutrinoSettings, stop: StopFlags) -> None:
        self.pool = pool
        self.worker_id = worker_id
        self.conf = conf
        self.stop = stop
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self.psub: JetStreamContext.PullSubscription | None = None

    async def connect(self) -> bool:
        """Connect, however long NATS takes to come up (outages are logged); False if stopped first."""
        try:
            self.nc = await connect(self.conf.nats_url, name=f"neutrino-worker-{self.pool}-{self.worker_id}",
                                    logger=logger, disconnected_cb=self._on_disconnected,
                                    reconnected_cb=self._on_reconnected, until=self.stop.requested)
        except Exception as exc:
            logger.error("cannot connect to NATS at %s: %s", shown(self.conf.nats_url), exc)
            return False
        if self.nc is None:
            return False
        self.js = self.nc.jetstream(timeout=5.0)
        logger.info("connected to NATS at %s", shown(self.conf.nats_url))
        return True

    async def _on_disconnected(self) -> None:
        if not self.stop.requested.is_set():
            logger.warning("disconnected from NATS at %s; reconnecting", shown(self.conf.nats_url))

    async def _on_reconnected(self) -> None:
        logger.info("reconnected to NATS at %s", shown(self.conf.nats_url))

    async def set_up(self, *, on_cancel: Callable[[Msg], Awaitable[None]],
                     on_max_deliveries: Callable[[Msg], Awaitable[None]]) -> JetStreamContext.PullSubscription | None:
        """The stream, this pool's consumer, the pull subscription and the control subscriptions.

        Retried every second until it works; None if the worker was asked to stop first.
        """
        assert self.nc is not None and self.js is not None
        subscribed = False
        while not self.stop.requested.is_set():
            try:
                await self.ensure_topology()
                if not subscribed:
                    await self.nc.subscribe(CANCEL_SUBJECT, cb=on_cancel)
                    # One worker of the pool handles each advisory (a queue group per pool).
                    await self.nc.subscribe(MAX_DELIVERIES_ADVISORY, queue=f"neutrino-advisory-{self.pool}",
                                            cb=on_max_deliveries)
                    subscribed = True
                self.psub = await self.js.pull_subscribe_bind(durable=consumer_name(self.pool), stream=STREAM)
                return self.psub
            except Exception as exc:
                logger.warning("cannot set up stream %s / consumer %s yet (%s); retrying",
                               STREAM, consumer_name(self.pool), exc)
                if await self.stop.sleep(1.0):
                    return None
        return None

    async def ensure_topology(self) -> None:
        """Create or update the stream (all NATS pools' subjects) and this pool's consumer."""
        assert self.js is not None
        pools = await db(nats_pool_names)
        if self.pool not in pools:
            pools.append(self.pool)
        await ensure_stream(self.js, pools, replicas=self.conf.stream_replicas)
        try:  # [objects] without the bucket only large results fail (and are retried): tasks still run
            await ensure_bucket(self.js, ttl_s=self.conf.retention_days * 86400.0, replicas=self.conf.stream_replicas)
        except Exception as exc:
            logger.warning("cannot create the results bucket yet (%s); large results wait for it", exc)
        settings = ConsumerSettings(ack_wait_s=self.conf.ack_wait_s, max_deliver=self.conf.max_deliver)
        for level in PRIORITIES:
            await ensure_consumer(self.js, self.pool, settings, level)

    async def stop_deliveries(self) -> None:
        """No more deliveries to this worker."""
        if self.psub is not None:
            # (Its pending queue is never "joined", so leaving it subscribed would make the drain wait for
            # its timeout.)
            try:
                await self.psub.unsubscribe()
            except Exception as exc:
                logger.debug("unsubscribe: %s", exc)

    async def drain(self) -> None:
        """Drain the connection (closing it if the drain fails or takes over `DRAIN_TIMEOUT_S`)."""
        if self.nc is not None:
            try:
                await asyncio.wait_for(self.nc.drain(), timeout=DRAIN_TIMEOUT_S)
            except Exception as exc:
                logger.debug("NATS drain: %s", exc)
                await self.nc.close()
