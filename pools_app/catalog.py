"""The `PoolCatalog` port over the pools table: how tasks_app learns where a task may go.

tasks_app sits below pools_app and never imports it; the process wires this catalog into its `Ports`.
"""

from __future__ import annotations

from pools_app.models import PoolMode
from pools_app.selectors import nats_pool_names, pools_by_name
from tasks_app.core.ports import PoolRoute


class PoolTable:
    """Pools as the admins defined them, read through the selectors' short cache."""

    def route(self, name: str) -> PoolRoute | None:
        pool = pools_by_name().get(name)
        if pool is None:
            return None
        return PoolRoute(name=pool.name, queued=pool.mode == PoolMode.NATS, enabled=pool.enabled,
                         draining=pool.draining, max_backlog=pool.max_backlog)

    def names(self) -> list[str]:
        return sorted(pools_by_name())

    def queued_names(self) -> list[str]:
        return nats_pool_names()
