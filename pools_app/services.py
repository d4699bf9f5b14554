"""Writes of pools and of the autoscaler's decisions.

A change to a pool takes effect without a restart: after the commit, the JetStream stream's subjects
and the pool's consumer are brought up to date (`pool_topology_sync`), submits see the pool within
the gateway's 2 s pools cache, and local workers follow through `neutrino dev`'s autoscaler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone
from nats.js.errors import NotFoundError

from neutrino.app import PRIORITIES
from pools_app.models import Pool, PoolMode, ScalingDecision
from pools_app.selectors import forget_cached_pools, nats_pool_names, pool_active_counts
from pools_app.validation import HTTP_POOL
from tasks_app.core.conf import neutrino_settings
from tasks_app.core.errors import Conflict
from tasks_app.core.ports import Broker
from tasks_app.services.audit import Actor, audit_record_if, snapshot
from workers.engine.broker.errors import BrokerError
from workers.engine.topology import STREAM, ConsumerSettings, consumer_name, ensure_consumer, ensure_stream

logger = logging.getLogger("neutrino.pools")

DECISIONS_KEPT_FOR = timedelta(days=1)
PRUNE_EVERY_S = 60.0
_last_prune = 0.0


# --- the autoscaler's record -------------------------------------------------------------------


def scaling_decision_record(*, pool: str, pending: int, in_flight: int, current: int, desired: int, reason: str,
                            actuator: str, at: datetime | None = None) -> ScalingDecision:
    """Record one decision; rows older than a day are deleted (at most once a minute per process)."""
    global _last_prune
    row = ScalingDecision.objects.create(
        pool=pool, at=at or timezone.now(), pending=max(0, pending), in_flight=max(0, in_flight),
        current=max(0, current), desired=max(0, desired), reason=reason[:300], actuator=actuator,
    )
    if time.monotonic() - _last_prune >= PRUNE_EVERY_S:
        _last_prune = time.monotonic()
        scaling_decisions_prune(older_than=DECISIONS_KEPT_FOR)
    return row


def scaling_decisions_prune(*, older_than: timedelta) -> int:
    deleted, _ = ScalingDecision.objects.filter(at__lt=timezone.now() - older_than).delete()
    return int(deleted)


# --- pools -------------------------------------------------------------------------------------


def pool_save(*, broker: Broker | None, pool: Pool, actor: Actor | None = None) -> Pool:
    """Validate and save a new or changed pool, then update the stream and its consumer after the commit.

    With an `actor` (a person's change: the dashboard, the admin), the audit trail records it.
    Raises `django.core.exceptions.ValidationError` ({field: [messages]}) for bad values.
    """
    pool.full_clean()
    stored = Pool.objects.filter(pk=pool.pk).first() if pool.pk is not None else None
    pool.save()
    _audit(actor, "pool.create" if stored is None else "pool.change", stored, pool)
    _changed(broker)
    return pool


def _audit(actor: Actor | None, action: str, before: Pool | None, after: Pool | None) -> None:
    shown = after or before
    audit_record_if(actor, action=action, object_type="pool", object_id=shown.name if shown else "",
                    before=snapshot(before, exclude=("updated_at",)) if before is not None else None,
                    after=snapshot(after, exclude=("updated_at",)) if after is not None else None)


def pool_set_enabled(*, broker: Broker | None, pool: Pool, enabled: bool, actor: Actor | None = None) -> Pool:
    """Enable or disable a pool. Disabled: submits answer 503 and its workers stop (they drain first)."""
    if pool.name == HTTP_POOL and not enabled:
        raise Conflict(f"the {HTTP_POOL} pool runs the sync tasks inside the HTTP servers; it cannot be disabled")
    was = pool.enabled
    pool.enabled = enabled
    pool.save(update_fields=["enabled", "updated_at"])
    audit_record_if(actor, action="pool.enable" if enabled else "pool.disable", object_type="pool",
                    object_id=pool.name, before={"enabled": was}, after={"enabled": enabled})
    _changed(broker)
    return pool


def pool_set_draining(*, broker: Broker | None, pool: Pool, draining: bool, actor: Actor | None = None) -> Pool:
    """Drain a pool (new tasks answer 503, its workers finish the waiting ones) or take it back into service."""
    if pool.mode != PoolMode.NATS:
        raise Conflict(f"pool {pool.name} runs in the HTTP servers and has no queue to drain")
    was = pool.draining
    pool.draining = draining
    pool.save(update_fields=["draining", "updated_at"])
    audit_record_if(actor, action="pool.drain" if draining else "pool.undrain", object_type="pool",
                    object_id=pool.name, before={"draining": was}, after={"draining": draining})
    _changed(broker)
    return pool


def pool_delete(*, broker: Broker | None, pool: Pool, actor: Actor | None = None) -> None:
    """Delete a pool, refused while it has tasks waiting or running (drain it first)."""
    if pool.name == HTTP_POOL:
        raise Conflict(f"the {HTTP_POOL} pool runs the sync tasks inside the HTTP servers; it cannot be deleted")
    active = pool_active_counts(pools=[pool.name]).get(pool.name, 0)
    if active:
        raise Conflict(
            f"pool {pool.name} has {active} task(s) pending, queued or running; drain it first (new tasks are "
            "refused while its workers finish these), then delete it",
            pool=pool.name, active=active,
        )
    name, was_nats = pool.name, pool.mode == PoolMode.NATS
    _audit(actor, "pool.delete", pool, None)
    pool.delete()
    _changed(broker, removed=[name] if was_nats else [])


def _changed(broker: Broker | None, *, removed: Iterable[str] = ()) -> None:
    forget_cached_pools()
    gone = list(removed)
    transaction.on_commit(lambda: pool_topology_sync(broker=broker, removed=gone))


def pool_topology_sync(*, broker: Broker | None, removed: Iterable[str] = (), timeout_s: float = 5.0) -> str:
    """Stream subjects = the enabled NATS pools; each has its consumer; removed pools lose theirs.

    Returns "" when done, else why not (no NATS configured or reachable): the supervisor, the
    autoscaler and each worker bring the topology up to date again when they next look.
    """
    if broker is None:
        return "no NATS server configured"
    conf = neutrino_settings()
    pools = nats_pool_names()
    consumer = ConsumerSettings(ack_wait_s=conf.ack_wait_s, max_deliver=conf.max_deliver)
    gone = [name for name in removed if name not in pools]
    try:
        broker.call(lambda js, nc: topology_apply(js, pools=pools, consumer=consumer, removed=gone,
                                                  replicas=conf.stream_replicas), timeout_s)
    except BrokerError as exc:
        logger.warning("pools changed, but the stream could not be updated yet: %s", exc)
        return str(exc)
    except Exception as exc:  # a JetStream API error: say so, the next look retries
        logger.warning("pools changed, but JetStream refused the update: %r", exc)
        return repr(exc)
    return ""


async def topology_apply(js: Any, *, pools: list[str], consumer: Any, removed: Iterable[str] = (),
                         replicas: int = 1) -> None:
    """The stream for `pools` (with `replicas`: NEUTRINO_STREAM_REPLICAS), a consumer per pool and priority
    level, and none for the `removed` ones (async, any loop)."""
    await ensure_stream(js, pools, replicas=replicas)
    for name in pools:
        for level in PRIORITIES:
            await ensure_consumer(js, name, consumer, level)
    for name in removed:
        for level in PRIORITIES:
            try:
                await js.delete_consumer(STREAM, consumer_name(name, level))
            except NotFoundError:
                pass
