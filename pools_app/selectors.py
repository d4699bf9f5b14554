"""Reads of pools and workers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Q

from pools_app.models import Pool, PoolMode, ScalingDecision, Worker
from tasks_app.models import ACTIVE_STATUSES, Task, TaskStatus

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


# --- queues and the autoscaler's record (the pool screens, /metrics, the actuators) ---------------


def pool_active_counts(*, pools: list[str]) -> dict[str, int]:
    """Tasks pending, queued or running per pool (0 for a pool with none)."""
    counts = {name: 0 for name in pools}
    rows = (Task.objects.filter(pool__in=pools, status__in=ACTIVE_STATUSES)
            .values("pool").annotate(n=Count("id")).values_list("pool", "n"))
    for name, n in rows:
        counts[str(name)] = int(n)
    return counts


def pool_oldest_waiting(*, pools: list[str]) -> dict[str, datetime]:
    """When the oldest task still waiting (pending or queued) of each pool was created; absent: none waits."""
    oldest: dict[str, datetime] = {}
    for name in pools:
        created = (Task.objects.filter(pool=name, status__in=[TaskStatus.PENDING, TaskStatus.QUEUED])
                   .order_by("created_at").values_list("created_at", flat=True).first())
        if created is not None:
            oldest[name] = created
    return oldest


def scaling_latest(*, pools: list[str]) -> dict[str, ScalingDecision]:
    """The newest decision per pool (absent: none recorded in the last day)."""
    latest: dict[str, ScalingDecision] = {}
    for name in pools:
        row = ScalingDecision.objects.filter(pool=name).order_by("-at", "-id").first()
        if row is not None:
            latest[name] = row
    return latest


def scaling_history(*, pool: str, since: datetime) -> list[ScalingDecision]:
    """A pool's decisions since `since`, oldest first (one a tick: ~1800 an hour for `neutrino dev`)."""
    return list(ScalingDecision.objects.filter(pool=pool, at__gte=since).order_by("at", "id"))


@dataclass(frozen=True)
class PoolLive:
    """What a pool's live view shows: its queue, its workers and what the autoscaler wants."""

    pool: Pool
    pending: int | None  # None: JetStream did not answer (or the pool has no queue)
    in_flight: int | None
    oldest_waiting_s: float | None  # None: no task waits
    active_tasks: int  # pending, queued or running rows
    workers: list[WorkerState]
    latest: ScalingDecision | None
    history: list[ScalingDecision]

    @property
    def live_workers(self) -> int:
        return sum(1 for w in self.workers if w.state == "live")

    @property
    def queued(self) -> bool:
        return self.pool.mode == PoolMode.NATS


def pool_live(*, pool: Pool, now: datetime, heartbeat_s: float, depth: tuple[int, int] | None,
              history_for: timedelta = timedelta(hours=1)) -> PoolLive:
    oldest = pool_oldest_waiting(pools=[pool.name]).get(pool.name)
    history = scaling_history(pool=pool.name, since=now - history_for)
    return PoolLive(
        pool=pool,
        pending=None if depth is None else depth[0],
        in_flight=None if depth is None else depth[1],
        oldest_waiting_s=None if oldest is None else max(0.0, (now - oldest).total_seconds()),
        active_tasks=pool_active_counts(pools=[pool.name])[pool.name],
        workers=worker_states(now=now, heartbeat_s=heartbeat_s, pool=pool.name),
        latest=history[-1] if history else scaling_latest(pools=[pool.name]).get(pool.name),
        history=history,
    )


def pool_live_worker_count(*, pool: str, now: datetime, heartbeat_s: float) -> int:
    """Workers of `pool` running and heard from within LOST_AFTER_BEATS heartbeats (`idx_worker_pool_beat`)."""
    return Worker.objects.filter(pool=pool, stopped_at__isnull=True,
                                 last_heartbeat__gte=now - timedelta(seconds=LOST_AFTER_BEATS * heartbeat_s)).count()
