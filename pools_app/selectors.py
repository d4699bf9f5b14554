"""Reads of pools and workers."""

from __future__ import annotations

import time

from pools_app.models import Pool, PoolMode

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
