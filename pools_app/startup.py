"""Start-up checks: everything a task module gets wrong is reported before the first call."""

from __future__ import annotations

import logging
import sys

from django.db import DatabaseError

from neutrino.app import TaskDefinitionError
from pools_app.models import Pool, PoolMode
from tasks_app.core.registry import registered_tasks

logger = logging.getLogger("neutrino.startup")


def check_tasks() -> list[str]:
    """Load the task modules and return a warning per task whose pool is missing or disabled.

    Exits the process with a message when a task module cannot be loaded.
    """
    try:
        tasks = registered_tasks()
    except TaskDefinitionError as exc:
        print(f"neutrino: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        pools = {pool.name: pool for pool in Pool.objects.all()}
    except DatabaseError as exc:
        print(f"neutrino: cannot read the pools from the database ({exc}); run `neutrino manage migrate`",
              file=sys.stderr)
        raise SystemExit(2) from None
    warnings = []
    for name, spec in sorted(tasks.items()):
        pool = pools.get(spec.pool)
        if pool is None:
            warnings.append(f"task {name} names pool {spec.pool!r}, which does not exist; "
                            f"its calls answer 503 until an admin creates the pool")
        elif spec.runs_on_nats and pool.mode != PoolMode.NATS:
            warnings.append(f"task {name} is {spec.execution_mode} but pool {spec.pool!r} is an http pool")
        elif not pool.enabled:
            warnings.append(f"task {name} runs on pool {spec.pool!r}, which is disabled")
    for warning in warnings:
        logger.warning(warning)
    return warnings
