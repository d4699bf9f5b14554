"""Retries: a task's function run again as a new task, with the same arguments or with changes (other
args, timeout or pool, checked as a submit is) that the new row records as `retry_changes`."""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError

from neutrino.app import TaskSpec
from tasks_app.core.errors import Conflict, InvalidArguments, TaskFailed, TaskTimeout
from tasks_app.core.ports import Ports
from tasks_app.core.registry import task_spec
from tasks_app.models import Task, TaskCreator, TaskStatus
from tasks_app.selectors import tasks as selectors
from tasks_app.services.audit import Actor, audit_record_if
from tasks_app.services.idempotency import task_by_key
from tasks_app.services.submit import pool_check_backlog, task_submit
from tasks_app.services.tasks import task_run_sync, task_validate_args
from tasks_app.services.tokens import token_check_task
from workers.engine import tracing


@dataclass(frozen=True)
class RetryResult:
    """The new task a retry made (`result` or `error` when it ran sync and has finished), and what it
    changed from the original (`{field: {"before", "after"}}`, empty for a plain retry)."""

    task_id: str
    status: str
    retry_of: str
    result: Any = None
    error: str | None = None
    changes: dict[str, Any] | None = None


@dataclass(frozen=True)
class RetryChanges:
    """What a retry with changes runs differently from the original task; None: as the original."""

    args: dict[str, Any] | None = None
    timeout_ms: int | None = None
    pool: str | None = None  # queued tasks only: another pool that takes queued tasks


RETRY_TIMEOUT_MAX_MS = 24 * 3600 * 1000
# A sync task's retry holds the request while it runs: it may wait at most this long.
SYNC_RETRY_TIMEOUT_MAX_MS = 60_000


def task_retry(*, ports: Ports, task_id: uuid.UUID, key: str | None, creator: TaskCreator,
               owner: TaskCreator | None = None, allowed_tasks: tuple[str, ...] = (),
               changes: RetryChanges | None = None, actor: Actor | None = None) -> RetryResult:
    """Run the task's function again as a new task that records `retry_of` and `creator`: with the same
    args, or with `changes` (other args, timeout or pool, validated as a submit is), recorded on the new
    row as `retry_changes`.

    Only a task of `owner`'s (when given; others are not found) whose function is in `allowed_tasks`
    (when not empty; Forbidden otherwise). At most once per key, and refused while the task's pool is full.
    With an `actor` (a person's request), the new task and the changes are recorded in the audit trail.
    """
    retry = _task_retry(ports=ports, task_id=task_id, key=key, creator=creator, owner=owner,
                        allowed_tasks=allowed_tasks, changes=changes)
    audit_record_if(actor, action="task.retry", object_type="task", object_id=task_id,
                    after={"task_id": retry.task_id, "status": retry.status, "changes": retry.changes})
    return retry


def _task_retry(*, ports: Ports, task_id: uuid.UUID, key: str | None, creator: TaskCreator,
                owner: TaskCreator | None, allowed_tasks: tuple[str, ...],
                changes: RetryChanges | None) -> RetryResult:
    if key is not None:
        existing = task_by_key(key=key)
        if existing is not None:
            if existing.retry_of_id != task_id:
                raise Conflict(f"this Idempotency-Key was already used for another call (task {existing.id})",
                               task_id=str(existing.id))
            return _retry_result(existing)
    original = selectors.task_get(task_id=task_id, ledger=ports.ledger, grace_s=selectors.LEDGER_GRACE_S,
                                  owner=owner)
    token_check_task(who=creator.label, allowed_tasks=allowed_tasks, task_name=original.function_name)
    spec = task_spec(original.function_name)
    args = original.args if isinstance(original.args, dict) else {}
    spec, args, changed = _apply_changes(ports, spec, original, args, changes or RetryChanges())
    retry_of = str(original.id)
    try:
        if spec.runs_on_nats:
            pool_check_backlog(ports=ports, spec=spec, adding=1)
            # The retry's trace starts here and links to the original's (workers.engine.tracing).
            with tracing.span("neutrino.retry", attributes={"neutrino.retry_of": retry_of},
                              links=[original.traceparent] if original.traceparent else ()):
                task = task_submit(ports=ports, spec=spec, args=args, retry_of=retry_of, idempotency_key=key,
                                   creator=creator, retry_changes=changed, priority=original.priority)
            return RetryResult(task_id=str(task.id), status=task.status, retry_of=retry_of, changes=changed)
        try:
            outcome = task_run_sync(ports=ports, spec=spec, args=args, retry_of=retry_of, idempotency_key=key,
                                    creator=creator, retry_changes=changed)
        except (TaskFailed, TaskTimeout, Conflict) as exc:
            return RetryResult(task_id=exc.details["task_id"], retry_of=retry_of, error=exc.message,
                               status=TaskStatus.CANCELLED if isinstance(exc, Conflict) else TaskStatus.FAILED,
                               changes=changed)
        return RetryResult(task_id=outcome.task_id, status=TaskStatus.COMPLETED, retry_of=retry_of,
                           result=json.loads(outcome.result_json), changes=changed)
    except IntegrityError:
        existing = task_by_key(key=key) if key is not None else None
        if existing is None:
            raise
        return _retry_result(existing)


def task_retry_preview(*, ports: Ports, task_id: uuid.UUID, changes: RetryChanges,
                       owner: TaskCreator | None = None) -> dict[str, Any] | None:
    """What a retry with `changes` would change (None: nothing), checked as `task_retry` checks it, without
    making a task. Raises InvalidArguments (422) naming the field, TaskNotFound."""
    original = selectors.task_get(task_id=task_id, ledger=ports.ledger, grace_s=selectors.LEDGER_GRACE_S,
                                  owner=owner)
    args = original.args if isinstance(original.args, dict) else {}
    return _apply_changes(ports, task_spec(original.function_name), original, args, changes)[2]


def _apply_changes(ports: Ports, spec: TaskSpec, original: Task, args: dict[str, Any],
                   changes: RetryChanges) -> tuple[TaskSpec, dict[str, Any], dict[str, Any] | None]:
    """The spec and args a retry runs with, and what differs from the original (None: nothing).
    Raises InvalidArguments (422) naming the field for args, a timeout or a pool the task cannot take."""
    changed: dict[str, Any] = {}
    if changes.args is not None:
        new_args = task_validate_args(spec=spec, args=changes.args)
        if new_args != args:
            changed["args"] = {"before": args, "after": new_args}
        args = new_args
    if changes.timeout_ms is not None:
        limit = RETRY_TIMEOUT_MAX_MS if spec.runs_on_nats else SYNC_RETRY_TIMEOUT_MAX_MS
        if isinstance(changes.timeout_ms, bool) or not isinstance(changes.timeout_ms, int) \
                or not 1 <= changes.timeout_ms <= limit:
            raise InvalidArguments(
                f"timeout_ms must be a whole number of milliseconds from 1 to {limit:,}"
                + ("" if spec.runs_on_nats else f" ({spec.name} is a sync task: its caller waits for it)"),
                field="options.timeout_ms", task=spec.name)
        if changes.timeout_ms != original.timeout_ms:
            changed["timeout_ms"] = {"before": original.timeout_ms, "after": changes.timeout_ms}
        spec = dataclasses.replace(spec, timeout_ms=changes.timeout_ms)
    if changes.pool is not None and changes.pool != original.pool:
        if not isinstance(changes.pool, str):
            raise InvalidArguments("pool must be a pool's name", field="options.pool", task=spec.name)
        if not spec.runs_on_nats:
            raise InvalidArguments(f"{spec.name} is a sync task: it runs on the fast pool, not on another",
                                   field="options.pool", task=spec.name)
        pool = ports.pools.route(changes.pool)
        if pool is None or not pool.queued:
            raise InvalidArguments(f"no pool {changes.pool!r} takes queued tasks; choose a NATS pool",
                                   field="options.pool", task=spec.name)
        changed["pool"] = {"before": original.pool, "after": changes.pool}
        spec = dataclasses.replace(spec, pool=changes.pool)
    return spec, args, changed or None


def _retry_result(task: Task) -> RetryResult:
    return RetryResult(task_id=str(task.id), status=task.status, retry_of=str(task.retry_of_id),
                       result=task.result, error=task.error or None, changes=task.retry_changes)
