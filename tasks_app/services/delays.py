"""Time on a task: the release of delayed tasks when their time comes (`tasks_release_due`,
`task_run_now`) and the end of tasks that waited too long (`tasks_expire_due`). A submit's own timing is
checked in `tasks_app.services.timing`.

A delayed queued task is written `scheduled` with its `run_at`; no message exists until then. The
scheduler's release job moves the due rows scheduled -> pending with one conditional UPDATE per chunk,
then publishes exactly the rows that UPDATE moved through the one queueing path (msg id = task id; the
ledger marks them queued). Several schedulers may run: a row moves once, so only one of them publishes
it. One that dies between the UPDATE and the publish leaves the rows `pending`, which the workers'
sweeper publishes (`tasks_app.services.republish`).

Expiry: a waiting task (scheduled, pending or queued, which includes a retry's backoff) whose
`expires_at` has passed ends `expired` without running. Two things end it: the worker's claim refuses it
(`tasks_app.services.tasks.task_mark_running`) and the scheduler's expiry job ends those no worker
reached.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from django.db import connection, transaction
from django.db.models import Field, QuerySet
from django.utils import timezone

from tasks_app.core.errors import BrokerUnavailable, Conflict
from tasks_app.core.ports import Ports
from tasks_app.models import WAITING_STATUSES, Task, TaskCreator, TaskStatus
from tasks_app.selectors.tasks import LEDGER_GRACE_S, task_get
from tasks_app.services import fan_in
from tasks_app.services.audit import Actor, audit_record_if
from tasks_app.services.submit import queue_released
from tasks_app.services.tasks import expired_fields
from tasks_app.services.tokens import token_check_task
from workers.engine.broker.errors import BrokerDown

logger = logging.getLogger("neutrino.delays")

# Rows moved per UPDATE, and UPDATEs per round of a job: a round handles at most their product, so a
# backlog (a scheduler that was down for an hour) drains over several rounds without starving the others.
CHUNK = 500
MAX_CHUNKS = 20

# --- the release of due tasks -------------------------------------------------------------------


def tasks_release_due(*, ports: Ports, now: datetime | None = None, chunk: int = CHUNK,
                      max_chunks: int = MAX_CHUNKS) -> int:
    """Queue the scheduled tasks whose run_at has come, soonest first; returns how many were published.

    NATS down: the chunk goes back to scheduled and the next round tries again.
    """
    now = now or timezone.now()
    released = 0
    for _ in range(max_chunks):
        due = Task.objects.filter(status=TaskStatus.SCHEDULED, run_at__lte=now).order_by("run_at")
        ids = move_rows(due, chunk=chunk, statuses=[TaskStatus.SCHEDULED], set_values={"status": TaskStatus.PENDING})
        if not ids:
            break
        try:
            released += _publish(ports, ids)
        except BrokerDown as exc:
            logger.warning("NATS is unavailable (%s): the tasks not yet queued go back to scheduled until it is "
                           "back", exc)
            break
        if len(ids) < chunk:
            break
    return released


def task_run_now(*, ports: Ports, task_id: uuid.UUID, owner: TaskCreator | None = None,
                 allowed_tasks: tuple[str, ...] = (), who: str = "", actor: Actor | None = None) -> Task:
    """Release a scheduled task at once, through the same path as the scheduler (its run_at becomes now).

    Only a task of `owner`'s (when given: others' are not found) whose function is in `allowed_tasks` (when
    not empty: Forbidden otherwise). Raises Conflict when the task is not scheduled (any more), and
    BrokerUnavailable when NATS is down (the task stays scheduled, due now: the scheduler queues it later).
    """
    task = task_get(task_id=task_id, ledger=ports.ledger, grace_s=LEDGER_GRACE_S, owner=owner)
    token_check_task(who=who, allowed_tasks=allowed_tasks, task_name=task.function_name)
    moved = Task.objects.filter(id=task_id, status=TaskStatus.SCHEDULED).update(
        status=TaskStatus.PENDING, run_at=timezone.now())
    if not moved:
        current = task_get(task_id=task_id)
        raise Conflict(f"task {task_id} is {current.status}, not scheduled; only a scheduled task can be run now",
                       task_id=str(task_id), status=current.status)
    try:
        _publish(ports, [task_id])
    except BrokerDown as exc:
        raise BrokerUnavailable(f"NATS is unavailable ({exc}); task {task_id} stays scheduled, due now, and is "
                                "queued as soon as NATS is back", task_id=str(task_id))
    audit_record_if(actor, action="task.run_now", object_type="task", object_id=task_id,
                    before={"status": TaskStatus.SCHEDULED, "run_at": task.run_at}, after={"status": "queued"})
    return task_get(task_id=task_id)


@dataclass(frozen=True)
class _RowTarget:
    """Where a released row's message goes, from the row (its function need not be registered here)."""

    name: str
    pool: str
    max_retries: int
    timeout_ms: int
    priority: str


def _publish(ports: Ports, ids: Sequence[uuid.UUID]) -> int:
    """Publish rows this process just moved to pending, grouped by what their messages share.

    BrokerDown (nothing of that group was sent) puts that group and the ones after it back to scheduled,
    and is raised again; the groups before it are queued.
    """
    groups: dict[_RowTarget, list[tuple[uuid.UUID, dict[str, Any]]]] = defaultdict(list)
    rows = Task.objects.filter(id__in=ids, status=TaskStatus.PENDING).values(
        "id", "function_name", "pool", "max_retries", "timeout_ms", "args", "priority")
    for row in rows:
        target = _RowTarget(name=row["function_name"], pool=row["pool"], max_retries=row["max_retries"],
                            timeout_ms=row["timeout_ms"], priority=row["priority"])
        groups[target].append((row["id"], row["args"] if isinstance(row["args"], dict) else {}))
    published = 0
    pending = list(groups.items())
    for index, (target, group) in enumerate(pending):
        try:
            statuses = queue_released(ports=ports, target=target, rows=group, priority=target.priority)
        except BrokerDown:
            _unrelease([task_id for _, rest in pending[index:] for task_id, _ in rest])
            raise
        published += sum(1 for status in statuses if status == TaskStatus.QUEUED)
    return published


def _unrelease(ids: Sequence[uuid.UUID]) -> int:
    """Put released rows that were not published back to scheduled (only those still pending)."""
    return Task.objects.filter(id__in=ids, status=TaskStatus.PENDING).update(status=TaskStatus.SCHEDULED)


# --- expiry --------------------------------------------------------------------------------------


def tasks_expire_due(*, ports: Ports, now: datetime | None = None, chunk: int = CHUNK,
                     max_chunks: int = MAX_CHUNKS) -> int:
    """End `expired` the waiting tasks (scheduled, pending, queued) whose expires_at has passed; how many."""
    now = now or timezone.now()
    expired = 0
    # One status at a time, soonest expiry first: a range of the (status, expires_at) index each. With
    # `status IN (...)` SQLite's planner chose to scan the whole table.
    for status in WAITING_STATUSES:
        due = Task.objects.filter(status=status, expires_at__lte=now).order_by("expires_at")
        for _ in range(max_chunks):
            ids = move_rows(due, chunk=chunk, statuses=[status], set_values=expired_fields(now))
            if ids:
                ports.events.emit_many([str(task_id) for task_id in ids], TaskStatus.EXPIRED)
                fan_in.members_finished(ports=ports, task_ids=[str(task_id) for task_id in ids])
                expired += len(ids)
            if len(ids) < chunk:
                break
    return expired


# --- moving rows in chunks ------------------------------------------------------------------------


def move_rows(rows: QuerySet[Task], *, chunk: int, statuses: Sequence[str],
              set_values: dict[str, Any]) -> list[uuid.UUID]:
    """Apply `set_values` to up to `chunk` of `rows` (in their order) that are still in `statuses`, in one
    conditional UPDATE; returns the ids this call moved, which no other process moved too.

    PostgreSQL: the chunk is chosen with FOR UPDATE SKIP LOCKED, so two schedulers take different rows
    instead of waiting on each other. SQLite: the write lock serialises the UPDATEs; without RETURNING
    (SQLite before 3.35) each row gets its own conditional UPDATE, counted by its rowcount.
    """
    if not rows.exists():
        return []  # the common tick: one read of an index, and no write lock taken (SQLite has one)
    quote = connection.ops.quote_name
    table = quote(Task._meta.db_table)
    assignments, params = [], []
    for name, value in set_values.items():
        field = cast("Field[Any, Any]", Task._meta.get_field(name))  # concrete columns only
        assignments.append(f"{quote(cast(str, field.column))} = %s")
        params.append(field.get_db_prep_save(value, connection))
    condition = f"{quote('status')} IN ({', '.join(['%s'] * len(statuses))})"
    update = f"UPDATE {table} SET {', '.join(assignments)} WHERE {condition}"
    with transaction.atomic(), connection.cursor() as cursor:
        picked = rows.values("id")[:chunk]
        if connection.vendor == "postgresql":
            picked = picked.select_for_update(skip_locked=True)
        if connection.features.can_return_columns_from_insert:
            sub_sql, sub_params = picked.query.sql_with_params()
            returning = f"RETURNING {quote('id')}"
            if connection.vendor == "postgresql":
                # Chosen once: PostgreSQL may run an IN (subquery) more than once, and with SKIP LOCKED (or
                # ties in the order) each run can pick other rows, moving more than `chunk`.
                cursor.execute(f"WITH picked AS MATERIALIZED ({sub_sql}) {update} AND {quote('id')} IN "
                               f"(SELECT {quote('id')} FROM picked) {returning}", [*sub_params, *params, *statuses])
            else:  # SQLite runs an uncorrelated IN (subquery) once
                cursor.execute(f"{update} AND {quote('id')} IN ({sub_sql}) {returning}",
                               [*params, *statuses, *sub_params])
            return [_as_uuid(row[0]) for row in cursor.fetchall()]
        moved = []
        pk = Task._meta.pk
        for task_id in [row["id"] for row in picked]:
            cursor.execute(f"{update} AND {quote('id')} = %s",
                           [*params, *statuses, pk.get_db_prep_value(task_id, connection)])
            if cursor.rowcount:
                moved.append(_as_uuid(task_id))
        return moved


def _as_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
