"""Reads of pools and workers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Q

from pools_app.models import Pool, PoolMode, Worker

_CACHE_S = 2.0
_cache: tuple[float, dict[str, Pool]] = (0.0, {})


def pools_by_name(*, max_age_s: float = _CACHE_S) -> dict[str, Pool]:
    """Every pool by name, cached for a moment: submits read it on every call, admins change it rarely."""
    global _cache
    loaded_at, pools = _cache
    if time.monotonic() - loaded_at > max_age_s:
        pools = {pool.name: pool for pool in Pool.objects.all()}
        _cache = (time.monotonic(), pools)
    return pools


def forget_cached_pools() -> None:
    """Drop the cache, so the next read sees a change made in this process at once."""
    global _cache
    _cache = (0.0, {})


def nats_pool_names() -> list[str]:
    return sorted(p.name for p in Pool.objects.filter(mode=PoolMode.NATS, enabled=True))


LOST_AFTER_BEATS = 3
SHOW_LOST_FOR = timedelta(hours=1)
SHOW_STOPPED_FOR = timedelta(minutes=10)


@dataclass(frozen=True)
class WorkerState:
    worker: Worker
    state: str  # "live" | "lost" (silent for LOST_AFTER_BEATS heartbeats) | "stopped"
    silent_s: float  # seconds since its last heartbeat


def worker_states(*, now: datetime, heartbeat_s: float, pool: str | None = None) -> list[WorkerState]:
    """The worker processes worth showing: running ones (live or lost), and ones stopped a moment ago.

    A worker that has not sent a heartbeat for LOST_AFTER_BEATS intervals is lost; one silent for
    over an hour is no longer listed (its row stays in the table).
    """
    recent = Q(stopped_at__isnull=True, last_heartbeat__gte=now - SHOW_LOST_FOR) | Q(
        stopped_at__gte=now - SHOW_STOPPED_FOR
    )
    rows = Worker.objects.filter(recent).order_by("pool", "worker_id")
    if pool is not None:
        rows = rows.filter(pool=pool)
    lost_after_s = LOST_AFTER_BEATS * heartbeat_s
    states = []
    for worker in rows:
        silent_s = max(0.0, (now - worker.last_heartbeat).total_seconds())
        if worker.stopped_at is not None:
            state = "stopped"
        elif silent_s > lost_after_s:
            state = "lost"
        else:
            state = "live"
        states.append(WorkerState(worker=worker, state=state, silent_s=silent_s))
    return states
