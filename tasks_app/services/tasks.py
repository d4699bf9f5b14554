"""Writes: running, submitting, cancelling and retrying tasks."""

from __future__ import annotations

import functools
import logging
import secrets
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import pydantic
from django.db import connection, transaction
from django.db.models import Field
from django.utils import timezone

from neutrino.app import TaskSpec
from tasks_app.core.errors import (
    Conflict,
    InvalidArguments,
    NeutrinoError,
    TaskFailed,
    TaskTimeout,
)
from tasks_app.core.ports import Ports, TaskEvents
from tasks_app.core.storable import storable_fields, storable_json, storable_text
from tasks_app.metrics import sync_task_finished
from tasks_app.models import ACTIVE_STATUSES, Task, TaskAttempt, TaskCreator, TaskStatus
from tasks_app.selectors.tasks import LEDGER_GRACE_S, task_get
from tasks_app.services import fan_in
from tasks_app.services.audit import Actor, audit_record_if
from tasks_app.services.objects import result_object_store
from workers.engine import executor as ex
from workers.engine.spool import spooled
from workers.engine.topology import CANCEL_SUBJECT

logger = logging.getLogger("neutrino.services")

GATEWAY_ID = f"{socket.gethostname()}:gateway"


@dataclass(frozen=True)
class SyncOutcome:
    task_id: str
    result_json: str
    duration_ms: float | None  # None only when a replayed call finds no duration on its row


def task_validate_args(*, spec: TaskSpec, args: Any) -> dict[str, Any]:
    """Check `args` against the task's signature. Raises InvalidArguments naming each bad field."""
    if not isinstance(args, dict):
        raise InvalidArguments(
            f"'args' must be a JSON object of named arguments for {spec.name}, got {type(args).__name__}",
            task=spec.name,
            fields=[{"field": "args", "message": "must be an object"}],
        )
    try:
        spec.bind(args)
    except pydantic.ValidationError as exc:
        fields = [
            {
                "field": ".".join(str(part) for part in error["loc"]) or "args",
                "message": error["msg"],
                "type": error["type"],
            }
            for error in exc.errors(include_url=False, include_input=False)
        ]
        described = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        raise InvalidArguments(f"invalid arguments for {spec.name}: {described}", task=spec.name, fields=fields)
    return args


def task_run_sync(
    *, ports: Ports, spec: TaskSpec, args: dict[str, Any], creator: TaskCreator, retry_of: str | None = None,
    idempotency_key: str | None = None, retry_changes: dict[str, Any] | None = None,
    callback_url: str | None = None, parent_id: uuid.UUID | None = None,
) -> SyncOutcome:
    """Run a sync task on this process's pool and record it in the ledger (off the request path).

    With an `idempotency_key` the row is written before the task runs (the key is claimed in the
    database, not in the ledger's next batch; IntegrityError means another call holds the key) and
    its end is written before the answer, so a repeat or a poll never finds it still running. That
    costs the call two small writes on its own thread instead of none.
    Raises TaskFailed (500), TaskTimeout (504) or Conflict (cancelled) with the task id.
    """
    if ports.runner is None:
        raise RuntimeError(f"this process runs no sync tasks; {spec.name} is one")
    task_id = str(uuid.uuid4())
    ledger = ports.ledger
    now = timezone.now()
    row = dict(
        function_name=spec.name,
        status=TaskStatus.RUNNING,
        pool=spec.pool,
        execution_mode=spec.execution_mode,
        created_at=now,
        started_at=now,
        attempt=1,
        timeout_ms=spec.timeout_ms,
        args=args,
        worker_id=GATEWAY_ID,
        retry_of_id=retry_of,
        **creator.fields(),
    )
    if retry_changes is not None:
        row["retry_changes"] = retry_changes
    if callback_url is not None:
        row["callback_url"] = callback_url
    if parent_id is not None:
        row["parent_id"] = parent_id
    if idempotency_key is None:
        ledger.record_start(task_id, **row)
        record_finish = functools.partial(ledger.record_finish, task_id)
    else:
        Task.objects.create(id=task_id, idempotency_key=idempotency_key, **row)
        record_finish = functools.partial(_record_finish_now, ports.events, task_id)
    started = time.perf_counter()
    try:
        outcome = ports.runner.run(
            task_id=task_id,
            function=spec.name,
            args=args,
            timeout_ms=spec.timeout_ms,
            on_progress=lambda fraction, message: ledger.record_progress(task_id, fraction, message),
            on_log=LogPieces(lambda seq, data, dropped: ledger.record_log(task_id, 1, seq, data, dropped)),
        )
    except ex.ExecutorError as exc:
        elapsed_ms = (time.perf_counter() - started) * 1000
        status, error = _failure(spec, task_id, exc)
        record_finish(
            status=status,
            completed_at=timezone.now(),
            duration_ms=elapsed_ms,
            error=error.message,
            error_type=str(error.details.get("error_type", "")),
            traceback=getattr(exc, "traceback", "") or "",
            worker_id=getattr(exc, "worker_id", "") or GATEWAY_ID,
        )
        sync_task_finished(function=spec.name, pool=spec.pool, status=status, duration_s=None)
        raise error from None
    value, result_json = outcome.value, outcome.result_json
    if spooled(value) is not None:  # [objects] too large for a reply: stored, the caller gets its reference
        try:
            value, result_json = result_object_store(broker=ports.broker, task_id=task_id, value=value)
        except NeutrinoError as error:
            record_finish(status=TaskStatus.FAILED, completed_at=timezone.now(), duration_ms=outcome.duration_ms,
                          error=error.message, error_type="ResultError", worker_id=outcome.worker_id)
            raise
    sync_task_finished(function=spec.name, pool=spec.pool, status=TaskStatus.COMPLETED,
                       duration_s=outcome.duration_ms / 1000)
    record_finish(
        status=TaskStatus.COMPLETED,
        completed_at=timezone.now(),
        duration_ms=outcome.duration_ms,
        result=value,
        worker_id=outcome.worker_id,
    )
    return SyncOutcome(task_id=task_id, result_json=result_json, duration_ms=outcome.duration_ms)


class LogPieces:
    """The executor's `on_log` for one attempt: numbers its pieces (1, 2, ...) and hands each to `store`."""

    __slots__ = ("seq", "store")

    def __init__(self, store: Callable[[int, bytes, int], None]) -> None:
        self.store = store
        self.seq = 0

    def __call__(self, data: bytes, dropped_bytes: int) -> None:
        self.seq += 1
        self.store(self.seq, data, dropped_bytes)


def _record_finish_now(events: TaskEvents, task_id: str, **fields: Any) -> None:
    """A sync task's end, written at once (the ledger's conditional UPDATE, without the batch)."""
    if Task.objects.filter(id=task_id, status=TaskStatus.RUNNING).update(**storable_fields(fields)):
        events.emit(task_id, str(fields["status"]))


def _failure(spec: TaskSpec, task_id: str, exc: ex.ExecutorError) -> tuple[str, Any]:
    """Map an executor error to the ledger status and the error the caller sees."""
    failure = ex.describe_failure(exc, function=spec.name, timeout_ms=spec.timeout_ms)
    if isinstance(exc, ex.TaskTimeout):
        return TaskStatus.FAILED, TaskTimeout(failure.message, task_id=task_id, error_type=failure.error_type,
                                               timeout_ms=spec.timeout_ms)
    if isinstance(exc, ex.TaskCancelled):
        return TaskStatus.CANCELLED, Conflict(failure.message, task_id=task_id, error_type=failure.error_type)
    details: dict[str, Any] = {"traceback": failure.traceback} if isinstance(exc, ex.TaskRaised) else {}
    return TaskStatus.FAILED, TaskFailed(failure.message, task_id=task_id, error_type=failure.error_type, **details)


# --- transitions reported by the workers. Each is one conditional UPDATE: a redelivered message,
# --- a late result from an older attempt or a cancel that won the race can never move a finished task.
# --- What the task produced (result, error, traceback, progress message) goes through
# --- `tasks_app.core.storable` first, like the ledger's rows: a NUL in it cannot fail the write.


# The two transitions every queued task makes are written as plain SQL: built through the ORM, a
# conditional UPDATE cost 0.25-0.43 ms of Python per call against 0.05 ms for the statement itself, and
# that, twice per task, was most of what bounded a worker's rate for short tasks. The values still go
# through each field's own conversion, so SQLite and PostgreSQL store exactly what the ORM would.


def _update_task(*, set_values: dict[str, Any], where_sql: str, where_values: list[Any]) -> int:
    """`UPDATE tasks SET <set_values> WHERE <where_sql>`; values converted by their model fields."""
    return _run_update(set_values=set_values, where_sql=where_sql, where_values=where_values)[0]


def _run_update(*, set_values: dict[str, Any], where_sql: str, where_values: list[Any],
                returning: Sequence[str] = ()) -> tuple[int, list[dict[str, Any]]]:
    keep = tuple(isinstance(value, _KeepIfSet) for value in set_values.values())
    sql, set_fields, returned = _update_statement(connection.vendor, tuple(set_values), keep, where_sql,
                                                  tuple(returning))
    params = [field.get_db_prep_save(value.value if isinstance(value, _KeepIfSet) else value, connection)
              for field, value in zip(set_fields, set_values.values(), strict=True)]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *where_values])
        if not returned:
            return int(cursor.rowcount), []
        rows = [{field.name: _from_db(field, value) for field, value in zip(returned, row, strict=True)}
                for row in cursor.fetchall()]
        return len(rows), rows


@functools.cache
def _update_statement(vendor: str, names: tuple[str, ...], keep_if_set: tuple[bool, ...], where_sql: str,
                      returning: tuple[str, ...]) -> tuple[str, list[Field[Any, Any]], list[Field[Any, Any]]]:
    """The UPDATE's text and its fields, built once per shape (building it was a third of the call)."""
    quote = connection.ops.quote_name
    set_fields = [cast("Field[Any, Any]", Task._meta.get_field(name)) for name in names]  # concrete columns only
    assignments = []
    for field, keep in zip(set_fields, keep_if_set, strict=True):
        column = quote(cast(str, field.column))
        assignments.append(f"{column} = COALESCE({column}, %s)" if keep else f"{column} = %s")
    sql = f"UPDATE {quote(Task._meta.db_table)} SET {', '.join(assignments)} WHERE {where_sql}"
    returned = [cast("Field[Any, Any]", Task._meta.get_field(name)) for name in returning]
    if returned:
        sql += " RETURNING " + ", ".join(quote(cast(str, field.column)) for field in returned)
    return sql, set_fields, returned


def _from_db(field: Field[Any, Any], value: Any) -> Any:
    """A column's value as the model has it (a JSON column arrives as text on SQLite)."""
    for converter in field.get_db_converters(connection):
        value = converter(value, field, connection)
    return value


@dataclass(frozen=True)
class _KeepIfSet:
    """Set a column only where it is still NULL."""

    value: Any


def _task_pk(task_id: str) -> Any:
    return Task._meta.pk.get_db_prep_value(uuid.UUID(str(task_id)), connection)


def _record_past_attempt(*, task_id: str, attempt: int, outcome: str, error: str = "",
                         seen: Mapping[str, Any] | None = None) -> None:
    """Keep an attempt that ended without finishing the task, for the detail page's timeline."""
    if seen is None:
        return
    TaskAttempt.objects.create(task_id=task_id, attempt=attempt, worker_id=seen["worker_id"],
                               started_at=seen["started_at"], ended_at=timezone.now(), outcome=outcome,
                               error=storable_text(error[:2000]))


def _running_attempt(task_id: str, attempt: int | None = None) -> Mapping[str, Any] | None:
    rows = Task.objects.filter(id=task_id, status=TaskStatus.RUNNING)
    if attempt is not None:
        rows = rows.filter(attempt=attempt)
    return rows.values("attempt", "worker_id", "started_at").first()


@dataclass(frozen=True)
class ClaimedTask:
    """What a worker runs, read from the row it just claimed: never from the message, which anyone who
    can publish on the pool's subject could have written."""

    task_id: str
    function: str
    args: dict[str, Any]
    timeout_ms: int
    max_retries: int


_CLAIM_COLUMNS = ("function_name", "args", "timeout_ms", "max_retries")
_CLAIMABLE = (TaskStatus.PENDING, TaskStatus.QUEUED)
_EXPIRES_AT = cast("Field[Any, Any]", Task._meta.get_field("expires_at"))


def task_mark_running(*, events: TaskEvents, task_id: str, pool: str, attempt: int,
                      worker_id: str) -> ClaimedTask | None:
    """Claim a task of `pool` for this attempt and return what to run, from its row.

    None when it is finished, cancelled, claimed by a newer attempt, not a task of this pool, or past its
    expires_at without having started: that one is ended `expired` here, so its message can go.
    """
    # A redelivery (attempt > 1) may take over from a worker that died mid-run: note that attempt first.
    previous = _running_attempt(task_id) if attempt > 1 else None
    now = timezone.now()
    claim: dict[str, Any] = dict(
        set_values={"status": TaskStatus.RUNNING, "attempt": attempt, "worker_id": worker_id, "started_at": now,
                    "queued_at": _KeepIfSet(now), "progress": None, "progress_message": ""},
        # A waiting row starts only before its expiry; a running one whose worker died was started already.
        where_sql="id = %s AND pool = %s AND cancel_requested = %s "
                  "AND ((status IN (%s, %s) AND (expires_at IS NULL OR expires_at > %s)) "
                  "OR (status = %s AND attempt < %s))",
        where_values=[_task_pk(task_id), pool, False, str(TaskStatus.PENDING), str(TaskStatus.QUEUED),
                      _EXPIRES_AT.get_db_prep_value(now, connection), str(TaskStatus.RUNNING), attempt],
    )
    # The columns to run (they never change after submit) are read by the claim itself where the database
    # can: Django's flag for INSERT ... RETURNING is the same clause and the same SQLite version (3.35).
    if connection.features.can_return_columns_from_insert:
        rows = _run_update(**claim, returning=_CLAIM_COLUMNS)[1]
    else:  # read after the claim: the row is ours now
        rows = list(Task.objects.filter(id=task_id).values(*_CLAIM_COLUMNS)) if _update_task(**claim) else []
    if not rows:
        _expire_refused(events, task_id, pool, now)
        return None
    if previous is not None and previous["attempt"] < attempt:
        _record_past_attempt(task_id=task_id, attempt=previous["attempt"], outcome=TaskAttempt.Outcome.LOST,
                             error="its worker stopped answering; the message was delivered again",
                             seen=previous)
    events.emit(task_id, TaskStatus.RUNNING, attempt=attempt, worker_id=worker_id)
    row = rows[0]
    return ClaimedTask(task_id=task_id, function=str(row["function_name"]),
                       args=row["args"] if isinstance(row["args"], dict) else {},
                       timeout_ms=int(row["timeout_ms"]), max_retries=int(row["max_retries"]))


def _expire_refused(events: TaskEvents, task_id: str, pool: str, now: datetime) -> None:
    """A refused claim (the rare path): end the row `expired` if its expiry is why it was refused."""
    if Task.objects.filter(id=task_id, pool=pool, cancel_requested=False, status__in=_CLAIMABLE,
                           expires_at__lte=now).update(**expired_fields(now)):
        events.emit(task_id, TaskStatus.EXPIRED)
        fan_in.members_finished(ports=None, task_ids=[task_id])


def expired_fields(now: datetime) -> dict[str, Any]:
    """The columns of a task that ends `expired`: it never ran (again)."""
    return {"status": TaskStatus.EXPIRED, "completed_at": now, "error_type": "Expired",
            "error": "expired: it had not started by its expires_at, so it will not run"}


def task_mark_completed(*, events: TaskEvents, task_id: str, attempt: int, result: Any, duration_ms: float,
                        worker_id: str, ports: Ports | None = None) -> bool:
    """`ports`: to publish a group callback this completion fires (without: the sweeper publishes it)."""
    # The group id comes back with the UPDATE (RETURNING): a task of no group pays no extra statement.
    returning = ("group_id",) if connection.features.can_return_columns_from_insert else ()
    updated, rows = _run_update(
        set_values={"status": TaskStatus.COMPLETED, "result": storable_json(result), "duration_ms": duration_ms,
                    "worker_id": worker_id, "completed_at": timezone.now(), "error": "", "error_type": "",
                    "traceback": ""},
        where_sql="id = %s AND status = %s AND attempt = %s",
        where_values=[_task_pk(task_id), str(TaskStatus.RUNNING), attempt],
        returning=returning,
    )
    if updated:
        events.emit(task_id, TaskStatus.COMPLETED)
        fan_in.members_finished(ports=ports, task_ids=[task_id],
                                group_ids=[row["group_id"] for row in rows] if returning else None)
    return bool(updated)


def task_mark_retrying(*, events: TaskEvents, task_id: str, attempt: int, error: str, error_type: str, traceback: str,
                       duration_ms: float | None) -> bool:
    """A failed attempt that will be tried again: back to queued, keeping the error for the record."""
    seen = _running_attempt(task_id, attempt)
    error, error_type, traceback = storable_text(error), storable_text(error_type), storable_text(traceback)
    updated = Task.objects.filter(id=task_id, status=TaskStatus.RUNNING, attempt=attempt).update(
        status=TaskStatus.QUEUED, error=error, error_type=error_type, traceback=traceback,
        duration_ms=duration_ms,
    )
    if updated:
        _record_past_attempt(task_id=task_id, attempt=attempt, outcome=TaskAttempt.Outcome.RETRIED, error=error,
                             seen=seen)
        events.emit(task_id, TaskStatus.QUEUED, attempt=attempt)
    return bool(updated)


def task_mark_failed(*, events: TaskEvents, task_id: str, attempt: int | None, error: str, error_type: str,
                     traceback: str = "", duration_ms: float | None = None, ports: Ports | None = None) -> bool:
    """Final failure. With `attempt` it only fails that attempt; without, any task not yet finished."""
    rows = Task.objects.filter(id=task_id)
    rows = rows.filter(status=TaskStatus.RUNNING, attempt=attempt) if attempt is not None else rows.filter(
        status__in=ACTIVE_STATUSES
    )
    updated = rows.update(
        status=TaskStatus.FAILED, error=storable_text(error), error_type=storable_text(error_type),
        traceback=storable_text(traceback), duration_ms=duration_ms, completed_at=timezone.now(),
    )
    if updated:
        events.emit(task_id, TaskStatus.FAILED)
        fan_in.members_finished(ports=ports, task_ids=[task_id])
    return bool(updated)


def task_mark_requeued(*, events: TaskEvents, task_id: str, attempt: int) -> bool:
    """A worker shutting down hands a running task back to the stream."""
    seen = _running_attempt(task_id, attempt)
    updated = Task.objects.filter(id=task_id, status=TaskStatus.RUNNING, attempt=attempt).update(
        status=TaskStatus.QUEUED, worker_id="",
    )
    if updated:
        _record_past_attempt(task_id=task_id, attempt=attempt, outcome=TaskAttempt.Outcome.HANDED_BACK,
                             error="the worker stopped before the task finished", seen=seen)
        events.emit(task_id, TaskStatus.QUEUED)
    return bool(updated)


def task_record_progress(*, events: TaskEvents, task_id: str, attempt: int, fraction: float, message: str) -> None:
    message = storable_text(message)
    Task.objects.filter(id=task_id, status=TaskStatus.RUNNING, attempt=attempt).update(
        progress=fraction, progress_message=message
    )
    events.emit(task_id, TaskStatus.RUNNING, progress=fraction, progress_message=message)


def task_cancel(*, ports: Ports, task_id: uuid.UUID, owner: TaskCreator | None = None,
                actor: Actor | None = None) -> Task:
    """Cancel a task (one of `owner`'s, when given): a pending or queued one never runs; a running one is killed.

    With an `actor` (a person's request), the cancel is recorded in the audit trail.
    Raises TaskNotFound, or Conflict when the task already finished.
    """
    # 404 unless it exists (or is about to) and is the owner's.
    before = task_get(ledger=ports.ledger, task_id=task_id, grace_s=LEDGER_GRACE_S, owner=owner).status
    updated = Task.objects.filter(id=task_id, status__in=ACTIVE_STATUSES).update(
        status=TaskStatus.CANCELLED,
        cancel_requested=True,
        completed_at=timezone.now(),
        error=CANCELLED_ERROR,
        error_type=CANCELLED_ERROR_TYPE,
    )
    if updated:
        _announce_cancelled(ports, [str(task_id)])
        _cancel_fan_out(ports, [str(task_id)])
        audit_record_if(actor, action="task.cancel", object_type="task", object_id=task_id,
                        before={"status": before}, after={"status": TaskStatus.CANCELLED})
    task = task_get(task_id=task_id)
    if not updated and task.status != TaskStatus.CANCELLED:
        raise Conflict(
            f"task {task_id} already finished ({task.status}); only pending, queued or running tasks "
            "can be cancelled",
            task_id=str(task_id),
            status=task.status,
        )
    return task


CANCELLED_ERROR = "cancelled on request"
CANCELLED_ERROR_TYPE = "Cancelled"


def tasks_cancel_many(*, ports: Ports, task_ids: Sequence[uuid.UUID]) -> list[str]:
    """`task_cancel` for many tasks in one conditional UPDATE: those still active end cancelled (a running
    one is killed); returns their ids. Finished ones are left as they are (no error: a bulk cancel counts them).

    Which rows the UPDATE moved is read by its RETURNING clause where the database has one; on an SQLite
    older than 3.35 the active ones are read first, in the same transaction, and one that finished between
    the read and the UPDATE is counted as cancelled although it is not (its cancel message kills nothing).
    """
    if not task_ids:
        return []
    statuses = [str(status) for status in ACTIVE_STATUSES]
    set_values = {"status": TaskStatus.CANCELLED, "cancel_requested": True, "completed_at": timezone.now(),
                  "error": CANCELLED_ERROR, "error_type": CANCELLED_ERROR_TYPE}
    where_sql = (f"id IN ({', '.join(['%s'] * len(task_ids))}) "
                 f"AND status IN ({', '.join(['%s'] * len(statuses))})")
    where_values = [*(_task_pk(str(task_id)) for task_id in task_ids), *statuses]
    if connection.features.can_return_columns_from_insert:
        rows = _run_update(set_values=set_values, where_sql=where_sql, where_values=where_values,
                           returning=("id",))[1]
        cancelled = [str(row["id"]) for row in rows]
    else:
        with transaction.atomic():
            cancelled = [str(i) for i in Task.objects.filter(id__in=task_ids, status__in=ACTIVE_STATUSES)
                         .values_list("id", flat=True)]
            _update_task(set_values=set_values, where_sql=where_sql, where_values=where_values)
    if cancelled:
        _announce_cancelled(ports, cancelled)
        _cancel_fan_out(ports, cancelled)
    return cancelled


def _cancel_fan_out(ports: Ports, task_ids: list[str]) -> None:
    """Cancelled tasks cancel their unfinished children (and theirs, each generation by the recursive call),
    and fire the groups they were the last unfinished members of."""
    children = fan_in.children_to_cancel(task_ids=task_ids)
    for start in range(0, len(children), CANCEL_CHUNK):
        tasks_cancel_many(ports=ports, task_ids=children[start:start + CANCEL_CHUNK])
    fan_in.members_finished(ports=ports, task_ids=task_ids)


CANCEL_CHUNK = 500  # ids in one conditional UPDATE


def _announce_cancelled(ports: Ports, task_ids: list[str]) -> None:
    """Whichever process runs them (this one, another HTTP process, a worker) kills their children."""
    if ports.runner is not None:
        for task_id in task_ids:
            ports.runner.cancel(task_id)
    if len(task_ids) == 1:
        ports.publisher.publish_event(CANCEL_SUBJECT, {"task_id": task_ids[0]})
        ports.events.emit(task_ids[0], TaskStatus.CANCELLED)
        return
    ports.publisher.publish_events([(CANCEL_SUBJECT, {"task_id": task_id}) for task_id in task_ids])
    ports.events.emit_many(task_ids, TaskStatus.CANCELLED)


# --- dashboard accounts ----------------------------------------------------------------------------


ADMIN_PASSWORD_BYTES = 15  # token_urlsafe: 20 characters


def admin_create(*, username: str, email: str = "", password: str | None = None) -> tuple[Any, str]:
    """Create a staff superuser. Returns the user and its password (generated when not given).

    Only the password's hash is stored. Raises Conflict when the username is taken.
    """
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    if user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).exists():
        raise Conflict(f"a user named {username!r} already exists; "
                       f"`neutrino manage changepassword {username}` sets a new password")
    password = password or secrets.token_urlsafe(ADMIN_PASSWORD_BYTES)
    user = user_model._default_manager.create_superuser(username=username, email=email, password=password)
    return user, password


def admin_ensure_first(*, username: str = "admin") -> str | None:
    """On a database without any user, create the first admin and return its (generated) password.

    Returns None when a user exists already (nothing is created, no password is known).
    """
    from django.contrib.auth import get_user_model

    if get_user_model()._default_manager.exists():
        return None
    _, password = admin_create(username=username)
    return password
