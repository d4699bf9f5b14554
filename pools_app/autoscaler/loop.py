"""The autoscaler's loop body, shared by both actuators: read each NATS pool's queue depth, decide, record.

    scaler = Autoscaler(actuator="local")                   # or "kubernetes"
    depths = read_depths(bridge, ["async", "gpu"])          # None: NATS did not answer
    decisions = scaler.tick(pools=pools, depths=depths, current={"async": 1, "gpu": 0})
    decisions["gpu"].desired                                # the actuator makes it so

`pools_app.autoscaler.local` starts and stops worker processes to match (`neutrino dev`);
`pools_app.autoscaler.kube` patches each pool Deployment's scale (`neutrino autoscale`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.db import DatabaseError, close_old_connections

from pools_app.autoscaler.decide import Decision, ScalingState, decide, policy_of
from pools_app.models import Pool, PoolMode
from pools_app.services import scaling_decision_record, topology_apply
from tasks_app.services.republish import task_republish_lost
from workers.engine.broker.bridge import NatsBridge
from workers.engine.topology import LOST_MESSAGE_AFTER_S, ConsumerSettings, PoolDepth, pool_depth

logger = logging.getLogger("neutrino.autoscale")

DEPTH_TIMEOUT_S = 3.0


def scaled_pools() -> list[Pool]:
    """Every NATS pool, enabled or not (a disabled one is scaled to zero); the fast pool is left alone.

    The first read of each step of either actuator: it first drops a connection the database broke (a
    restart, a terminated backend), as Django does at the start of each request; a loop outside any
    request would otherwise fail on the dead connection forever."""
    close_old_connections()
    return list(Pool.objects.filter(mode=PoolMode.NATS).order_by("name"))


def read_depths(bridge: NatsBridge, pools: Sequence[str], *,
                timeout_s: float = DEPTH_TIMEOUT_S) -> dict[str, PoolDepth] | None:
    """Pending and in-flight messages per pool from its JetStream consumer; None when NATS cannot say."""
    if not pools:
        return {}

    async def read(js: Any, nc: Any) -> dict[str, PoolDepth]:
        return {name: await pool_depth(js, name) for name in pools}

    try:
        return dict(bridge.call(read, timeout_s))
    except Exception as exc:  # BrokerDown, a timeout, or a JetStream API error: decide nothing this tick
        logger.info("queue depth unknown (%s: %s); replicas stay as they are", type(exc).__name__, exc)
        return None


def republish_lost(bridge: NatsBridge, depths: Mapping[str, PoolDepth], *,
                   older_than_s: float = LOST_MESSAGE_AFTER_S) -> int:
    """Publish again the queued tasks whose message the broker lost, in each pool whose consumer holds
    nothing (`depths`, read just before: see `task_republish_lost`). Returns how many."""
    count = 0
    for pool, depth in depths.items():
        if depth.pending or depth.in_flight or not depth.known:
            continue
        try:
            count += task_republish_lost(publisher=bridge, pool=pool, older_than_s=older_than_s)
        except DatabaseError as exc:
            logger.warning("queued tasks of pool %s not checked for lost messages: %s", pool, exc)
    return count


def sync_topology(bridge: NatsBridge, pools: Sequence[str], consumer: ConsumerSettings, *, replicas: int = 1,
                  timeout_s: float = DEPTH_TIMEOUT_S) -> bool:
    """The stream for the enabled NATS pools and a consumer for each, so depth is known before any worker
    starts (a pool with no worker still stores its messages). False when NATS did not answer."""
    try:
        bridge.call(lambda js, nc: topology_apply(js, pools=list(pools), consumer=consumer, replicas=replicas),
                    timeout_s)
    except Exception as exc:
        logger.info("stream and consumers not updated yet (%s: %s)", type(exc).__name__, exc)
        return False
    return True


class Autoscaler:
    """Decides and records, one tick at a time; keeps each pool's `ScalingState` between ticks."""

    def __init__(self, *, actuator: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.actuator = actuator
        self.clock = clock
        self.states: dict[str, ScalingState] = {}

    def tick(self, *, pools: Sequence[Pool], depths: Mapping[str, PoolDepth],
             current: Mapping[str, int]) -> dict[str, Decision]:
        """A decision for each pool whose depth is known (and recorded, when the database lets it)."""
        now = self.clock()
        decisions: dict[str, Decision] = {}
        for pool in pools:
            depth = depths.get(pool.name)
            if depth is None:
                continue
            replicas = int(current.get(pool.name, 0))
            decision = decide(policy=policy_of(pool), pending=depth.pending, in_flight=depth.in_flight,
                              current=replicas, now=now, state=self.states.get(pool.name))
            self.states[pool.name] = decision.state
            decisions[pool.name] = decision
            try:
                scaling_decision_record(pool=pool.name, pending=depth.pending, in_flight=depth.in_flight,
                                        current=replicas, desired=decision.desired, reason=decision.reason,
                                        actuator=self.actuator)
            except DatabaseError as exc:
                logger.warning("decision for pool %s not recorded: %s", pool.name, exc)
        for gone in set(self.states) - {pool.name for pool in pools}:
            del self.states[gone]
        return decisions
