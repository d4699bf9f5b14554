"""Bulk actions: cancel, retry or delete every task a filter matches, in the background, in chunks.

`bulk_create` counts the matching tasks (refusing with 409 when the caller confirmed another count),
writes a `BulkAction` row and its audit record; the work is done by the `neutrino scheduler` job
`bulk_work`, so it survives a gateway restart and never holds a request. Each round a scheduler claims
one action (a conditional UPDATE; a lease it renews after every chunk, so another scheduler takes over
only from one that stopped answering), then works chunks of CHUNK tasks, newest first, for at most
ROUND_S:

- cancel: `tasks_cancel_many`, `task_cancel`'s conditional UPDATE for the chunk (running tasks killed);
- retry: finished tasks of queued functions run again (`tasks_retry_many`: the batch path, each new task
  keyed by the action and the original, so a chunk done twice retries nothing twice). A pool whose
  max_backlog is reached takes as many as fit; the action waits for room, round after round;
- delete: finished tasks only (the row, its attempts; retries of it keep running, `retry_of` cleared).

What the chunk did not act on (a task that finished before its cancel, an active one to delete, a sync
task to retry) counts as `failed`, with a note. `bulk_stop` sets a flag the worker reads between chunks.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from neutrino.app import TaskSpec
from tasks_app.core.errors import Conflict, InvalidArguments, NeutrinoError, Overloaded
from tasks_app.core.ports import Ports
from tasks_app.core.registry import task_spec
from tasks_app.models import FINISHED_STATUSES, BulkAction, Task, TaskCreator
from tasks_app.operator_models import BulkActionKind, BulkActionStatus
from tasks_app.selectors.bulk import bulk_count, bulk_get, bulk_next_chunk, filter_to_json
from tasks_app.selectors.tasks import TaskFilters
from tasks_app.services.audit import SYSTEM, Actor, audit_record
from tasks_app.services.submit import pool_backlog, tasks_retry_many
from tasks_app.services.tasks import tasks_cancel_many

logger = logging.getLogger("neutrino.bulk")

CHUNK = 500  # tasks per statement
ROUND_S = 1.0  # a scheduler round works chunks this long, then lets the other jobs run
LEASE = timedelta(seconds=30)  # a claim not renewed for this long is taken over by another scheduler
NOTE_MAX = 500


# --- asked for by a person -------------------------------------------------------------------------


def bulk_create(*, filters: TaskFilters, action: str, actor: Actor, expected_count: int | None = None) -> BulkAction:
    """Write a bulk `action` over the tasks `filters` matches now, for the scheduler to work.

    Raises InvalidArguments (422) for an unknown action, Conflict (409) when `expected_count` is given and
    the filter now matches another number of tasks (the body says how many).
    """
    if action not in BulkActionKind.values:
        raise InvalidArguments(f"unknown bulk action {action!r}; one of {', '.join(BulkActionKind.values)}",
                               fields=[{"field": "action", "message": f"one of {', '.join(BulkActionKind.values)}"}])
    now = timezone.now()
    total = bulk_count(filters=filters, snapshot_at=now)
    if expected_count is not None and expected_count != total:
        raise Conflict(f"the filter now matches {total:,} tasks, not the {expected_count:,} confirmed; "
                       "confirm the new count to go on", count=total, expected_count=expected_count)
    with transaction.atomic():
        bulk = BulkAction.objects.create(
            action=action, filter=filter_to_json(filters), total=total, created_by=actor.label[:120],
            created_at=now, snapshot_at=now,
            # Nothing to do: finished at once, no scheduler needed.
            **({"status": BulkActionStatus.DONE, "finished_at": now} if total == 0 else {}),
        )
        audit_record(actor=actor, action=f"bulk.{action}", object_type="bulk_action", object_id=bulk.id,
                     after={"action": action, "filter": bulk.filter, "count": total})
    return bulk


def bulk_stop(*, bulk_id: uuid.UUID, actor: Actor) -> BulkAction:
    """Stop a bulk action: one not started yet is stopped at once; a running one after its current chunk
    (one whose scheduler stopped answering, at once). Stopping a finished one changes nothing.
    Raises TaskNotFound (404)."""
    bulk = bulk_get(bulk_id=bulk_id)
    now = timezone.now()
    with transaction.atomic():
        stopped_now = BulkAction.objects.filter(
            Q(status=BulkActionStatus.QUEUED) | Q(status=BulkActionStatus.RUNNING, lease_until__lt=now),
            id=bulk_id,
        ).update(status=BulkActionStatus.STOPPED, stop_requested=True, finished_at=now, note="stopped on request")
        flagged = stopped_now or BulkAction.objects.filter(id=bulk_id, status=BulkActionStatus.RUNNING).update(
            stop_requested=True)
        if flagged:
            audit_record(actor=actor, action="bulk.stop", object_type="bulk_action", object_id=bulk_id,
                         before={"status": bulk.status, "done": bulk.done, "failed": bulk.failed})
    return bulk_get(bulk_id=bulk_id)


# --- worked by the scheduler ---------------------------------------------------------------------


def scheduler_id() -> str:
    """This process, as the holder of a claim."""
    return f"{socket.gethostname()}:{os.getpid()}"


def bulk_work(*, ports: Ports, holder: str | None = None, round_s: float = ROUND_S, chunk: int = CHUNK) -> int:
    """One scheduler round: claim an unfinished bulk action and work it for about `round_s`.
    Returns how many tasks it acted on or counted as failed."""
    holder = holder or scheduler_id()
    bulk = _claim(holder)
    if bulk is None:
        return 0
    deadline = time.monotonic() + round_s
    worked = 0
    while True:
        state = BulkAction.objects.filter(id=bulk.id).values("status", "claimed_by", "stop_requested").first()
        if state is None or state["status"] != BulkActionStatus.RUNNING or state["claimed_by"] != holder:
            return worked  # stopped meanwhile, or taken over
        if state["stop_requested"]:
            _finish(bulk, holder, BulkActionStatus.STOPPED, "stopped on request")
            return worked
        rows = bulk_next_chunk(bulk=bulk, size=chunk)
        if not rows:
            _finish(bulk, holder, BulkActionStatus.DONE, "")
            return worked
        try:
            outcome = ACTIONS[bulk.action](ports, bulk, [task_id for task_id, _ in rows])
        except NeutrinoError as exc:  # the broker is down, a pool is gone: end it, say why
            _finish(bulk, holder, BulkActionStatus.FAILED, exc.message)
            return worked
        if not _advance(bulk, holder, rows, outcome):
            return worked
        worked += outcome.done + outcome.failed
        if outcome.processed < len(rows) or time.monotonic() >= deadline:
            return worked  # waiting for room in a pool, or this round's time is up


def _claim(holder: str) -> BulkAction | None:
    """The oldest unfinished action this holder may work: its own, one not started, or one whose holder's
    lease ran out. Claimed with a conditional UPDATE, so two schedulers never both hold one."""
    now = timezone.now()
    claimable = (Q(status=BulkActionStatus.QUEUED) | Q(status=BulkActionStatus.RUNNING, claimed_by=holder)
                 | Q(status=BulkActionStatus.RUNNING, lease_until__lt=now))
    for bulk_id in BulkAction.objects.filter(claimable).order_by("created_at").values_list("id", flat=True)[:5]:
        claimed = BulkAction.objects.filter(claimable, id=bulk_id).update(
            status=BulkActionStatus.RUNNING, claimed_by=holder, lease_until=now + LEASE,
            started_at=Coalesce(F("started_at"), now))
        if claimed:
            return BulkAction.objects.get(id=bulk_id)
    return None


@dataclass
class ChunkOutcome:
    processed: int  # how many of the chunk's tasks (from its start) were handled; the rest wait a round
    done: int = 0
    failed: int = 0
    notes: list[str] = field(default_factory=list)


def _advance(bulk: BulkAction, holder: str, rows: list[tuple[uuid.UUID, datetime]], outcome: ChunkOutcome) -> bool:
    """Record a chunk: counts, the cursor past its handled tasks, a renewed lease. False: no longer ours."""
    changes: dict[str, Any] = {"done": F("done") + outcome.done, "failed": F("failed") + outcome.failed,
                               "lease_until": timezone.now() + LEASE}
    if outcome.processed:
        last_id, last_created = rows[outcome.processed - 1]
        changes.update(cursor_created_at=last_created, cursor_id=last_id)
    if outcome.notes:
        changes["note"] = "; ".join(outcome.notes)[:NOTE_MAX]
    moved = BulkAction.objects.filter(id=bulk.id, claimed_by=holder, status=BulkActionStatus.RUNNING).update(**changes)
    if moved and outcome.processed:
        bulk.cursor_created_at, bulk.cursor_id = changes["cursor_created_at"], changes["cursor_id"]
    return bool(moved)


def _finish(bulk: BulkAction, holder: str, status: str, note: str) -> None:
    now = timezone.now()
    changes: dict[str, Any] = {"status": status, "finished_at": now, "lease_until": None}
    if note:
        changes["note"] = note[:NOTE_MAX]
    with transaction.atomic():
        if not BulkAction.objects.filter(id=bulk.id, claimed_by=holder,
                                         status=BulkActionStatus.RUNNING).update(**changes):
            return
        done = BulkAction.objects.get(id=bulk.id)
        audit_record(actor=Actor(label=SYSTEM), action="bulk.finish", object_type="bulk_action", object_id=bulk.id,
                     after={"status": status, "total": done.total, "done": done.done, "failed": done.failed,
                            "note": done.note})
    logger.info("bulk %s %s: %d done, %d not, of %d", bulk.action, status, done.done, done.failed, done.total)


# --- the actions, one chunk each -----------------------------------------------------------------


def _cancel(ports: Ports, bulk: BulkAction, task_ids: list[uuid.UUID]) -> ChunkOutcome:
    cancelled = len(tasks_cancel_many(ports=ports, task_ids=task_ids))
    outcome = ChunkOutcome(processed=len(task_ids), done=cancelled, failed=len(task_ids) - cancelled)
    if outcome.failed:
        outcome.notes.append("tasks that had finished before their cancel are counted as not done")
    return outcome


def _delete(ports: Ports, bulk: BulkAction, task_ids: list[uuid.UUID]) -> ChunkOutcome:
    with transaction.atomic():
        # Only the ids are read into the collector (rows may hold megabytes of args and result); it deletes
        # their attempts and clears `retry_of` / schedule fires pointing at them, as one task's delete does.
        _, per_model = Task.objects.filter(id__in=task_ids, status__in=FINISHED_STATUSES).only("id").delete()
    deleted = per_model.get(Task._meta.label, 0)
    outcome = ChunkOutcome(processed=len(task_ids), done=deleted, failed=len(task_ids) - deleted)
    if outcome.failed:
        outcome.notes.append("only finished tasks are deleted; active ones were left")
    return outcome


def _retry(ports: Ports, bulk: BulkAction, task_ids: list[uuid.UUID]) -> ChunkOutcome:
    """Retry the chunk's finished tasks in order, one batch per function, until a pool is full."""
    rows = {row["id"]: row for row in Task.objects.filter(id__in=task_ids).values("id", "status", "function_name",
                                                                                  "args")}
    outcome = ChunkOutcome(processed=0)
    notes: set[str] = set()
    groups: dict[str, list[tuple[uuid.UUID, dict[str, Any]]]] = defaultdict(list)
    order: list[tuple[uuid.UUID, str | None]] = []  # each task, and the function whose batch retries it
    for task_id in task_ids:
        row = rows.get(task_id)
        reason, spec = _why_not_retried(row)
        if reason:
            notes.add(reason)
            order.append((task_id, None))
            continue
        assert row is not None and spec is not None
        groups[spec.name].append((task_id, row["args"] if isinstance(row["args"], dict) else {}))
        order.append((task_id, spec.name))
    fits = {name: _retry_group(ports, bulk, name, items, notes) for name, items in groups.items()}
    taken: dict[str, int] = defaultdict(int)
    for _, name in order:
        if name is None:
            outcome.failed += 1
        elif taken[name] < fits[name]:
            taken[name] += 1
            outcome.done += 1
        else:
            break  # this one waits for room in its pool: the chunk stops here, the next round goes on
        outcome.processed += 1
    outcome.notes = sorted(notes)
    return outcome


def _why_not_retried(row: Mapping[str, Any] | None) -> tuple[str, TaskSpec | None]:
    if row is None:
        return "tasks deleted meanwhile were not retried", None
    if row["status"] not in FINISHED_STATUSES:
        return "only finished tasks are retried; active ones were left", None
    try:
        spec = task_spec(row["function_name"])
    except NeutrinoError:
        return f"{row['function_name']} is not a registered task here", None
    if not spec.runs_on_nats:
        return "sync tasks are retried one by one (POST /tasks/<id>/retry), not in bulk", None
    return "", spec


def _retry_group(ports: Ports, bulk: BulkAction, name: str, items: list[tuple[uuid.UUID, dict[str, Any]]],
                 notes: set[str]) -> int:
    """Retry as many of one function's tasks as its pool has room for, in order; returns how many."""
    spec = task_spec(name)
    room = _pool_room(ports, spec)
    if room is not None and room < len(items):
        notes.add(f"pool {spec.pool} is full (max_backlog); waiting for room")
        items = items[:room]
    if not items:
        return 0
    try:
        tasks_retry_many(ports=ports, spec=spec, originals=items, creator=TaskCreator(label=bulk.created_by),
                         key_prefix=f"bulk:{bulk.id}:")
    except Overloaded:  # filled by others since the count: the next round tries again
        notes.add(f"pool {spec.pool} is full (max_backlog); waiting for room")
        return 0
    return len(items)


def _pool_room(ports: Ports, spec: TaskSpec) -> int | None:
    """How many more tasks `spec`'s pool takes before its max_backlog (None: no limit)."""
    pool = ports.pools.route(spec.pool)
    if pool is None or pool.max_backlog <= 0:
        return None
    return max(0, pool.max_backlog - pool_backlog(pool=spec.pool, up_to=pool.max_backlog + 1))


ACTIONS: dict[str, Callable[[Ports, BulkAction, list[uuid.UUID]], ChunkOutcome]] = {
    BulkActionKind.CANCEL: _cancel,
    BulkActionKind.RETRY: _retry,
    BulkActionKind.DELETE: _delete,
}
