"""Writes of task logs: a piece of what an attempt wrote, as the executor read it.

Sync tasks' pieces go through the ledger writer (`Ledger.record_log`), in the batches that write their
rows; a pool worker's go here, from the thread that runs the task, one INSERT per piece (a piece every
half second at most while the task writes, and one at its end).
"""

from __future__ import annotations

from django.db import IntegrityError
from django.utils import timezone

from tasks_app.core.ports import TaskEvents
from tasks_app.models import TaskLogChunk


def task_log_append(*, events: TaskEvents, task_id: str, attempt: int, seq: int, data: bytes,
                    dropped_bytes: int) -> None:
    """Store one piece of an attempt's log and tell live views. A piece stored already is left as it is."""
    chunk = TaskLogChunk.from_read(task_id=task_id, attempt=attempt, seq=seq, data=data,
                                   dropped_bytes=dropped_bytes, written_at=timezone.now())
    try:
        TaskLogChunk.objects.bulk_create([chunk], ignore_conflicts=True)
    except IntegrityError:  # the task's row is gone (deleted while it ran): nothing to attach the log to
        return
    events.emit_log(task_id, attempt)
