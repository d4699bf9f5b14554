"""Reads: one task, and pages of tasks newest first (keyset pagination).

Every read takes an optional owner (`TaskCreator`): given one, only the tasks it created exist for
the reader (another's task is "not found", so its id reveals nothing); None reads every task.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet

from tasks_app.core.errors import BadRequest, TaskNotFound
from tasks_app.core.ports import Ledger, TaskEvents
from tasks_app.models import FINISHED_STATUSES, Task, TaskCreator, TaskStatus
from tasks_app.selectors.results import result_shown

# A page is at most this many rows; a bigger `limit` gets this many (and a next_cursor for the rest).
MAX_PAGE = 100
# Columns a list leaves unread unless asked: each may hold megabytes (NEUTRINO_MAX_PAYLOAD_BYTES), so a
# page of them could take a server's memory. One task's page (`task_get`) reads them all.
LIST_OPTIONAL_FIELDS = ("args", "result", "traceback")
MAX_WAIT_S = 60.0
# Events wake a long-poll at once; this re-read covers an event lost while NATS reconnects.
WAIT_RECHECK_S = 1.0
# Longer than the ledger writer's batch linger, so a just-answered sync call is found.
LEDGER_GRACE_S = 0.25


@dataclass(frozen=True)
class TaskFilters:
    status: str | None = None
    function: str | None = None
    pool: str | None = None
    execution_mode: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    id_prefix: str | None = None
    error_type: str | None = None  # exactly (an index range scan)
    error_contains: str | None = None  # anywhere in the error, any case (reads each row's error)
    owner: TaskCreator | None = None  # None: every creator's tasks


@dataclass(frozen=True)
class TaskPage:
    items: list[Task]
    next_cursor: str | None


def owned_by(qs: QuerySet[Task], owner: TaskCreator | None) -> QuerySet[Task]:
    """The tasks of `qs` that `owner` created (a token's by its id); all of them for None."""
    if owner is None:
        return qs
    if owner.token_id is not None:
        return qs.filter(created_by_token_id=owner.token_id)
    return qs.filter(created_by=owner.label, created_by_token__isnull=True)


def task_get(*, task_id: uuid.UUID, ledger: Ledger | None = None, grace_s: float = 0.0,
             owner: TaskCreator | None = None) -> Task:
    """One task (of `owner`'s, when given). With `ledger` and `grace_s`, a row still in a ledger
    writer's batch (a sync call that just answered, in this or another server process) is waited
    for that long before 404."""
    rows = owned_by(Task.objects.filter(id=task_id), owner)
    task = rows.first()
    if task is None and ledger is not None and grace_s > 0:
        ledger.flush(timeout_s=grace_s)
        deadline = time.monotonic() + grace_s
        while task is None and time.monotonic() < deadline:
            time.sleep(0.01)
            task = rows.first()
    if task is None:
        raise TaskNotFound(f"no task with id {task_id}", task_id=str(task_id))
    return task


def tasks_cancel_requested(*, task_ids: list[str]) -> list[str]:
    """Those of `task_ids` whose row says a cancel was requested: a cancel message alone kills nothing."""
    if not task_ids:
        return []
    return [str(i) for i in Task.objects.filter(id__in=task_ids, cancel_requested=True).values_list("id", flat=True)]


def task_wait(*, task_id: uuid.UUID, wait_s: float, ledger: Ledger, events: TaskEvents,
              owner: TaskCreator | None = None) -> Task:
    """The task once it has finished, or as it is when `wait_s` (at most 60 s) runs out."""
    task = task_get(task_id=task_id, ledger=ledger, grace_s=LEDGER_GRACE_S, owner=owner)
    if task.status in FINISHED_STATUSES or wait_s <= 0:
        return task
    deadline = time.monotonic() + min(wait_s, MAX_WAIT_S)
    with events.watch(str(task_id)) as changed:
        while (remaining := deadline - time.monotonic()) > 0:
            changed.wait(min(remaining, WAIT_RECHECK_S))
            changed.clear()
            task = task_get(task_id=task_id)
            if task.status in FINISHED_STATUSES:
                break
    return task


def task_queryset(*, filters: TaskFilters) -> QuerySet[Task]:
    qs = owned_by(Task.objects.all(), filters.owner)
    if filters.status:
        if filters.status not in TaskStatus.values:
            raise BadRequest(
                f"unknown status {filters.status!r}; expected one of {', '.join(TaskStatus.values)}",
                field="status",
            )
        qs = qs.filter(status=filters.status)
    if filters.function:
        qs = qs.filter(function_name=filters.function)
    if filters.pool:
        qs = qs.filter(pool=filters.pool)
    if filters.execution_mode:
        qs = qs.filter(execution_mode=filters.execution_mode)
    if filters.created_after:
        qs = qs.filter(created_at__gte=filters.created_after)
    if filters.created_before:
        qs = qs.filter(created_at__lt=filters.created_before)
    if filters.id_prefix:
        qs = _id_prefix_filter(qs, filters.id_prefix)
    if filters.error_type:
        qs = qs.filter(error_type=filters.error_type)
    if filters.error_contains:
        qs = qs.filter(error__icontains=filters.error_contains)
    return qs


def _id_prefix_filter(qs: QuerySet[Task], prefix: str) -> QuerySet[Task]:
    """Match ids starting with `prefix` as a primary-key range, so it uses the index on any database."""
    hexdigits = prefix.replace("-", "").lower()
    if not hexdigits or len(hexdigits) > 32 or any(c not in "0123456789abcdef" for c in hexdigits):
        return qs.none()
    low = uuid.UUID(hexdigits.ljust(32, "0"))
    high = uuid.UUID(hexdigits.ljust(32, "f"))
    return qs.filter(id__gte=low, id__lte=high)


def task_list(*, filters: TaskFilters, limit: int = 50, cursor: str | None = None,
              leave_out: Collection[str] = LIST_OPTIONAL_FIELDS) -> TaskPage:
    """A page of at most MAX_PAGE tasks, newest first. `cursor` is the opaque `next_cursor` of the previous page.

    The `leave_out` columns are not read (SQL `defer`); `task_as_dict` leaves them out of each item.
    """
    limit = max(1, min(limit, MAX_PAGE))
    qs = task_queryset(filters=filters).order_by("-created_at", "-id").defer(*leave_out)
    if cursor:
        created_at, last_id = decode_cursor(cursor)
        qs = qs.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=last_id))
    items = list(qs[: limit + 1])
    next_cursor = encode_cursor(items[limit - 1]) if len(items) > limit else None
    return TaskPage(items=items[:limit], next_cursor=next_cursor)


def encode_cursor(task: Task) -> str:
    raw = f"{task.created_at.isoformat()}|{task.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, task_id = raw.split("|", 1)
        return datetime.fromisoformat(created), uuid.UUID(task_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("invalid cursor; pass the next_cursor of a previous page unchanged", field="cursor")


# What the API shows of a task, in order. A key that is also a column's name is left out when the
# query deferred that column (see task_as_dict).
_SHOWN: dict[str, Callable[[Task], Any]] = {
    "task_id": lambda t: str(t.id),
    "function_name": lambda t: t.function_name,
    "status": lambda t: t.status,
    "pool": lambda t: t.pool,
    "execution_mode": lambda t: t.execution_mode,
    "args": lambda t: t.args,
    "result": lambda t: result_shown(t),  # [objects] a stored object: its reference and download link
    "error": lambda t: t.error or None,
    "error_type": lambda t: t.error_type or None,
    "traceback": lambda t: t.traceback or None,
    "attempt": lambda t: t.attempt,
    "max_retries": lambda t: t.max_retries,
    "timeout_ms": lambda t: t.timeout_ms,
    "worker_id": lambda t: t.worker_id or None,
    "created_at": lambda t: t.created_at,
    "queued_at": lambda t: t.queued_at,
    "started_at": lambda t: t.started_at,
    "completed_at": lambda t: t.completed_at,
    "run_at": lambda t: t.run_at,
    "expires_at": lambda t: t.expires_at,
    "duration_ms": lambda t: t.duration_ms,
    "progress": lambda t: t.progress,
    "progress_message": lambda t: t.progress_message or None,
    "retry_of": lambda t: str(t.retry_of_id) if t.retry_of_id else None,
    "retry_changes": lambda t: t.retry_changes,
    "cancel_requested": lambda t: t.cancel_requested,
    "created_by": lambda t: t.created_by or None,
    "concurrency_key": lambda t: t.concurrency_key or None,  # [limits] a limited task's key, once it was tried
    "parent_id": lambda t: str(t.parent_id) if t.parent_id else None,
    "group_id": lambda t: str(t.group_id) if t.group_id else None,
    "priority": lambda t: t.priority,
}


def task_as_dict(task: Task) -> dict[str, Any]:
    """The task as the API shows it, without the columns its query deferred: reading one would cost a
    query per row and bring back the bytes the list meant not to read."""
    deferred = task.get_deferred_fields()
    return {key: show(task) for key, show in _SHOWN.items() if key not in deferred}
