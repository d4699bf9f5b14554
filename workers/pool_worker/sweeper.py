"""The sweeper: republishes this pool's `pending` rows whose message the broker never confirmed."""

from __future__ import annotations

import logging

from tasks_app.core.conf import NeutrinoSettings
from tasks_app.core.ports import Ports
from tasks_app.services.republish import task_republish_pending
from workers.pool_worker.db import db
from workers.pool_worker.state import StopFlags

logger = logging.getLogger("neutrino.worker")

SWEEP_EVERY_S = 5.0  # how often the sweeper looks for unconfirmed pending rows


async def sweep_loop(*, ports: Ports, pool: str, conf: NeutrinoSettings, stop: StopFlags) -> None:
    """Every few seconds until the worker stops, republish the pool's rows pending longer than sweep_after_s."""
    every = max(0.5, min(SWEEP_EVERY_S, conf.sweep_after_s))
    while not await stop.sleep(every):
        try:
            count = await db(task_republish_pending, ports=ports, pool=pool, older_than_s=conf.sweep_after_s)
        except Exception as exc:
            logger.warning("sweeper: %s: %s", type(exc).__name__, exc)
            continue
        if count:
            logger.info("sweeper republished %d pending task(s) of pool %s", count, pool)
