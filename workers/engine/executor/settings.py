"""How the pool runs: the settings object callers pass in, and the fixed limits the pool keeps to."""

from __future__ import annotations

import os
from dataclasses import dataclass

START_TIMEOUT_S = 120.0  # a child must import the task modules within this (torch takes a while)
RETIRE_GRACE_S = 2.0  # a retired child must exit within this after being told to, or it is killed
EXIT_STATUS_WAIT_S = 1.0  # how long a crashed child's exit status may take to arrive
MAX_RESTART_BACKOFF_S = 10.0


@dataclass(frozen=True)
class ExecutorSettings:
    """How the pool runs. One object; durations carry their unit in the name."""

    task_modules: tuple[str, ...]  # imported in each child via neutrino.app.load_tasks
    processes: int = os.cpu_count() or 2  # children kept alive
    max_tasks_per_child: int = 1000  # recycle a child after N tasks (0 = never)
    max_result_bytes: int = 1_000_000  # a JSON-encoded result larger than this fails
    start_method: str = "forkserver"  # or "spawn"; never plain "fork" (threads + CUDA)
    pool: str = ""  # the pool the children serve: picks the start-up hooks (`@app.on_worker_start`) they run
    log_max_bytes: int = 1_000_000  # what a task writes is kept up to this per attempt (0: not captured)
    # [objects] With a spool directory, results over inline_result_bytes, bytes and neutrino.File come back
    # as a file there (workers.engine.objects), up to max_object_bytes; without one (sync pools) as before.
    spool_dir: str = ""
    inline_result_bytes: int = 262_144
    max_object_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        if isinstance(self.task_modules, str) or not all(isinstance(m, str) for m in self.task_modules):
            raise ValueError(f"task_modules must be a sequence of module names, got {self.task_modules!r}")
        object.__setattr__(self, "task_modules", tuple(m.strip() for m in self.task_modules if m.strip()))
        for name in ("processes", "max_tasks_per_child", "max_result_bytes", "log_max_bytes", "inline_result_bytes",
                     "max_object_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.processes < 1:
            raise ValueError(f"processes must be at least 1, got {self.processes}")
        if self.max_tasks_per_child < 0:
            raise ValueError(
                f"max_tasks_per_child must be 0 (never recycle) or more, got {self.max_tasks_per_child}"
            )
        if self.log_max_bytes < 0:
            raise ValueError(f"log_max_bytes must be 0 (no capture) or more, got {self.log_max_bytes}")
        if self.max_result_bytes < 1:
            raise ValueError(f"max_result_bytes must be positive, got {self.max_result_bytes}")
        if self.start_method not in ("forkserver", "spawn"):
            raise ValueError(
                f"start_method must be 'forkserver' or 'spawn', got {self.start_method!r} "
                "(plain 'fork' is unsafe in a threaded server and with CUDA)"
            )
