"""Which task this process runs now: a client used inside a task sends it as the `parent_id` of what it submits.

The worker child sets it around each task (`workers.engine.child`); elsewhere it is None.
"""

from __future__ import annotations

_current_task_id: str | None = None


def current_task_id() -> str | None:
    """The id of the task this process is running now (None outside a worker's task)."""
    return _current_task_id


def set_current_task(task_id: str | None) -> None:
    global _current_task_id
    _current_task_id = task_id
