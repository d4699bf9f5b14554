"""Fan-in: when the last member of a group finishes, its callback task is made, exactly once.

Called from where task rows reach a final status (`tasks_app.services.tasks`: completed, failed, cancelled;
`tasks_app.services.delays`: expired), in the transaction that wrote that status, and by the scheduler's
sweep (`groups_fire_due`) for any path that is not hooked (the Django admin, a worker killed between two
statements of a path that is). Exactly once, under any interleaving:

- a finisher locks its group's row (`SELECT ... FOR UPDATE`; SQLite's IMMEDIATE transactions hold the
  whole database) *after* writing its own status, then asks whether any member is still unfinished. Of
  two members finishing at once on two workers, the second to take the lock sees the first's commit, so
  the last finisher always sees the group done: it is never left unfired;
- the callback row is INSERTed in the same transaction as `UPDATE task_group SET fired_at = now WHERE
  id = ... AND fired_at IS NULL`, and only when that UPDATE moved the row: it is never fired twice
  (`callback_task_id` is also unique). A worker killed mid-way rolls back both, its message comes back,
  and the redelivered task (or the sweep) fires it.

The callback is published after the commit (`task_publish_pending`, the sweeper's own publish); one whose
publish did not happen (a process without a broker, a crash right after the commit) is pending, and the
callback's pool's sweeper publishes it.

Chains are groups of one member whose callback is the only member of the next group (`chain_rest`).
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from tasks_app.core.ports import Ports
from tasks_app.models import ACTIVE_STATUSES, GroupPolicy, Task, TaskGroup, TaskStatus
from tasks_app.services.republish import task_publish_pending
from workers.engine.broker.errors import BrokerError

logger = logging.getLogger("neutrino.groups")

SWEEP_LIMIT = 200  # open groups the scheduler's sweep looks at per round, oldest first
GROUP_FAILED_ERROR_TYPE = "GroupFailed"


@dataclass(frozen=True)
class Step:
    """A task still to make (a callback, a chain's next step): its function and its row's columns, fixed at
    submit, so the fan-in needs no task registry (a worker of another pool knows nothing of the function)."""

    function: str
    args: dict[str, Any]
    pool: str
    execution_mode: str
    timeout_ms: int
    max_retries: int

    @classmethod
    def from_json(cls, raw: Any) -> Step:
        return cls(function=str(raw["function"]), args=dict(raw.get("args") or {}), pool=str(raw["pool"]),
                   execution_mode=str(raw["execution_mode"]), timeout_ms=int(raw["timeout_ms"]),
                   max_retries=int(raw["max_retries"]))

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def members_finished(*, ports: Ports | None, task_ids: Sequence[str],
                     group_ids: Iterable[Any] | None = None) -> None:
    """Fire the groups that the just-finished `task_ids` complete. `group_ids`: their group ids when the
    caller already read them (a None in it: a task of no group); else they are read here."""
    if group_ids is None:
        group_ids = Task.objects.filter(id__in=list(task_ids), group_id__isnull=False).values_list(
            "group_id", flat=True)
    for group_id in {g for g in group_ids if g is not None}:
        group_fire_if_done(ports=ports, group_id=group_id)


def group_fire_if_done(*, ports: Ports | None, group_id: Any) -> str | None:
    """Fire the group if none of its members is unfinished; the callback's id when this call fired it."""
    # No savepoint: inside a worker's batch of transitions this joins the batch's transaction, so the lock
    # is held until the member's own status commits with it.
    with transaction.atomic(savepoint=False):
        if not _lock_open(group_id) or _any_unfinished(group_id):
            return None
        made = _fire(TaskGroup.objects.get(id=group_id))
    if made is not None and made.status == TaskStatus.PENDING and ports is not None:
        transaction.on_commit(functools.partial(_publish, ports, made))
    return str(made.id) if made is not None else None


def groups_fire_due(*, ports: Ports, limit: int = SWEEP_LIMIT) -> int:
    """The scheduler's sweep: fire open groups whose members have all finished (a path not hooked, or a
    process killed between a member's write and the fan-in of a path that is not one transaction)."""
    fired = 0
    for group_id in TaskGroup.objects.filter(fired_at__isnull=True).order_by("created_at").values_list(
            "id", flat=True)[:limit]:
        if group_fire_if_done(ports=ports, group_id=group_id) is not None:
            fired += 1
    return fired


def _lock_open(group_id: Any) -> bool:
    """Lock the group's row if it has not fired (SQLite: its IMMEDIATE transaction holds the database)."""
    table = connection.ops.quote_name(TaskGroup._meta.db_table)
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {table} WHERE id = %s AND fired_at IS NULL{lock}", [_group_pk(group_id)])
        return cursor.fetchone() is not None


def _any_unfinished(group_id: Any) -> bool:
    """A statement of its own, after the lock: on PostgreSQL it reads what committed while this one waited.
    A range of (group_id, status, group_index) per status: the cost does not grow with the group."""
    table = connection.ops.quote_name(Task._meta.db_table)
    statuses = [str(status) for status in ACTIVE_STATUSES]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {table} WHERE group_id = %s AND status IN "
                       f"({', '.join(['%s'] * len(statuses))}) LIMIT 1", [_group_pk(group_id), *statuses])
        return cursor.fetchone() is not None


def _group_pk(group_id: Any) -> Any:
    return TaskGroup._meta.pk.get_db_prep_value(uuid.UUID(str(group_id)), connection)


def _fire(group: TaskGroup) -> Task | None:
    """Mark the locked `group` fired and make its callback row; the row (None: no callback, or lost the race)."""
    now = timezone.now()
    callback_id = uuid.uuid4() if group.then_step else None
    if not TaskGroup.objects.filter(id=group.id, fired_at__isnull=True).update(fired_at=now,
                                                                                callback_task_id=callback_id):
        return None
    if group.then_step is None:
        return None
    step = Step.from_json(group.then_step)
    members = list(Task.objects.filter(group_id=group.id).order_by("group_index")
                   .values_list("id", "group_index", "status", "result", "error_type", "error"))
    results = [result if status == TaskStatus.COMPLETED else None for _, _, status, result, _, _ in members]
    failures: list[dict[str, Any]] = [
        {"index": index, "task_id": str(task_id), "status": status, "error_type": error_type, "error": error[:500]}
        for task_id, index, status, _, error_type, error in members if status != TaskStatus.COMPLETED]
    if group.chain_id is not None:
        args = {**step.args, "result": results[0] if results else None}
    else:
        args = {**step.args, "results": results}
        if group.policy == GroupPolicy.COLLECT:
            args["failures"] = failures
    fields: dict[str, Any] = {"status": TaskStatus.PENDING}
    if group.cancel_requested:
        fields = {"status": TaskStatus.CANCELLED, "completed_at": now, "cancel_requested": True,
                  "error_type": "Cancelled", "error": f"group {group.id} was cancelled, so its callback never ran"}
    elif failures and group.policy == GroupPolicy.ALL:
        by_status: dict[str, int] = {}
        for failure in failures:
            by_status[failure["status"]] = by_status.get(failure["status"], 0) + 1
        counted = ", ".join(f"{count} {status}" for status, count in sorted(by_status.items()))
        fields = {"status": TaskStatus.FAILED, "completed_at": now, "error_type": GROUP_FAILED_ERROR_TYPE,
                  "error": f"group {group.id}: {len(failures)} of {len(members)} tasks did not complete "
                           f"({counted}); with policy 'all' its callback {step.function} does not run "
                           f"(first: {failures[0]['task_id']} {failures[0]['error_type']}: "
                           f"{failures[0]['error'][:200]})"}
    next_group = _next_chain_group(group, step, now) if group.chain_rest else None
    callback = Task.objects.create(
        id=callback_id, function_name=step.function, pool=step.pool, execution_mode=step.execution_mode,
        created_at=now, timeout_ms=step.timeout_ms, max_retries=step.max_retries,
        args=args,
        parent_id=group.parent_id, created_by=group.created_by, created_by_token_id=group.created_by_token_id,
        group_id=next_group.id if next_group is not None else None,
        group_index=0 if next_group is not None else None, **fields,
    )
    if next_group is not None and callback.status != TaskStatus.PENDING:
        # A step that will not run ends the chain: each later step is made, ended as this one, at once.
        _fire(next_group)
    return callback


def _next_chain_group(group: TaskGroup, step: Step, now: Any) -> TaskGroup:
    rest = list(group.chain_rest)
    return TaskGroup.objects.create(
        function_name=step.function, size=1, then_function=str(rest[0]["function"]), then_step=rest[0],
        policy=group.policy, chain_id=group.chain_id, chain_step=group.chain_step + 1, chain_rest=rest[1:],
        parent_id=group.parent_id, created_at=now, created_by=group.created_by,
        created_by_token_id=group.created_by_token_id, cancel_requested=group.cancel_requested,
    )


def _publish(ports: Ports, task: Task) -> None:
    try:
        task_publish_pending(ports=ports, task=task)
    except BrokerError as exc:
        logger.warning("callback %s %s not published (%s); the sweeper of pool %s publishes it",
                       task.function_name, task.id, exc, task.pool)


def children_to_cancel(*, task_ids: Sequence[str]) -> list[uuid.UUID]:
    """The unfinished children of cancelled tasks; the groups those tasks made are marked cancelled (their
    callbacks end cancelled, unrun). The caller cancels the children, whose own children follow the same way."""
    if not task_ids:
        return []
    TaskGroup.objects.filter(parent_id__in=list(task_ids), fired_at__isnull=True).update(cancel_requested=True)
    return list(Task.objects.filter(parent_id__in=list(task_ids), status__in=ACTIVE_STATUSES)
                .values_list("id", flat=True))
