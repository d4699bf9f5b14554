"""Submits: one call of a task and many queued tasks at once, each at most once per key (retries: `retry`).

One path queues every task, single or batch (`_queue`): INSERT pending rows -> JetStream publish (msg id =
task id) -> the ledger writes them `queued` off the request path and publishes their events. A publish
that certainly failed fails its rows (and releases their keys); one whose ack did not come back leaves
them pending, and the sweeper (`task_republish_pending`) publishes them again under the same msg id.

- `task_call`: one call. With an Idempotency-Key, a repeat of a call made in the last
  NEUTRINO_IDEMPOTENCY_TTL_S (24 h) answers with the task the first call made (a sync call's result or
  error, a queued task's current state), never with a second task. The key is claimed by the row's
  unique `idempotency_key` column, so two racing repeats still make one task.
- `task_submit_many`: many queued tasks of one function, all or nothing: every item is validated
  first, all rows are written in one transaction, then published pipelined.
- `pool_check_backlog`: a pool with `max_backlog` refuses submits (429 + Retry-After) while that many
  tasks wait in it (pending + queued rows, counted on an index, stopping at the limit).

Keys: tasks_app.services.idempotency. Services answer with data (`CallResult`, `BatchResult`); the API
shapes the HTTP answer.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

from django.db import IntegrityError, connection, transaction
from django.db.models import Field
from django.utils import timezone

from neutrino.app import TaskSpec
from tasks_app.core.conf import neutrino_settings
from tasks_app.core.errors import (
    BrokerUnavailable,
    Conflict,
    InvalidArguments,
    Overloaded,
    TaskFailed,
    TaskTimeout,
)
from tasks_app.core.ports import Ports
from tasks_app.models import FINISHED_STATUSES, Task, TaskCreator, TaskStatus
from tasks_app.selectors import tasks as selectors
from tasks_app.services import flow
from tasks_app.services.idempotency import same_request, task_by_key
from tasks_app.services.limits import rate_check_submit
from tasks_app.services.tasks import SyncOutcome, task_run_sync, task_validate_args
from tasks_app.services.timing import Timing, submit_timing
from tasks_app.services.webhooks import webhook_url_check
from workers.engine import tracing
from workers.engine.broker.errors import BrokerDown, BrokerError
from workers.engine.topology import NORMAL, encode_task_message, task_subject

logger = logging.getLogger("neutrino.submissions")

# What a refused submit is told to wait: long enough for workers to drain some of the backlog.
BACKLOG_RETRY_AFTER_S = 5
UPDATE_CHUNK = 500


@dataclass(frozen=True)
class CallResult:
    """What one call made: a sync task's `outcome`, or a queued `task`. `replayed`: a key's repeat."""

    outcome: SyncOutcome | None = None
    task: Task | None = None
    replayed: bool = False
    deduplicated: bool = False  # a unique task's duplicate: `task` is the one its first submit made


@dataclass(frozen=True)
class BatchResult:
    """The batch's tasks in item order, as `(task_id, status)`."""

    items: list[tuple[str, str]]
    replayed: bool = False


# --- one call --------------------------------------------------------------------------------


def task_call(*, ports: Ports, spec: TaskSpec, args: Any, key: str | None, creator: TaskCreator,
              timing: Timing | None = None, callback_url: object = None, parent_id: uuid.UUID | None = None,
              priority: object = None, unique_for_s: object = None) -> CallResult:
    """Validate `args`, then run a sync task or queue a queued one (recording its `creator`), at most once per key.

    `timing` (`tasks_app.services.delays.submit_timing`) delays a queued task or gives it an expiry; None
    applies the task's default expiry. With a `callback_url` (allowed by NEUTRINO_WEBHOOK_ALLOWED_HOSTS),
    the task's final state is POSTed there once it finishes (tasks_app.services.webhooks). `priority` and
    `unique_for_s` as the body gave them (None: the task's own; tasks_app.services.flow).

    Raises InvalidArguments naming each bad field, and what the services raise.

    The key is claimed by the INSERT itself (no lookup first): only a key already taken costs a read,
    which finds the task to answer with, or releases a key past its TTL and claims it again.
    """
    args = task_validate_args(spec=spec, args=args)
    callback = None if callback_url is None else webhook_url_check(url=callback_url, field="callback_url")
    level = flow.submit_priority(spec=spec, value=priority)
    unique = flow.submit_uniqueness(spec=spec, args=args, value=unique_for_s)
    try:
        rate_check_submit(spec=spec, args_list=[args])  # [limits] reject mode: 429 once the rate is spent
    except Overloaded:
        existing = task_by_key(key=key) if key is not None else None  # a repeat is answered all the same
        if existing is None:
            raise
        return _replay_checked(ports, spec, args, existing)
    for _ in range(2):
        try:
            if spec.runs_on_nats:
                try:
                    pool_check_backlog(ports=ports, spec=spec, adding=1)
                except Overloaded:
                    # A full pool still answers a repeat with the task the first call queued.
                    existing = task_by_key(key=key) if key is not None else None
                    if existing is not None:
                        return _replay_checked(ports, spec, args, existing)
                    first = flow.task_by_unique_key(key=unique.key) if unique is not None else None
                    if first is None:
                        raise
                    return CallResult(task=first, deduplicated=True)
                return CallResult(task=task_submit(ports=ports, spec=spec, args=args, idempotency_key=key,
                                                   creator=creator, timing=timing, callback_url=callback,
                                                   parent_id=parent_id, priority=level, unique=unique))
            return CallResult(outcome=task_run_sync(ports=ports, spec=spec, args=args, idempotency_key=key,
                                                    creator=creator, callback_url=callback, parent_id=parent_id))
        except IntegrityError:
            if key is None and unique is None:
                raise
            existing = task_by_key(key=key) if key is not None else None
            if existing is not None:
                return _replay_checked(ports, spec, args, existing)
            first = flow.task_by_unique_key(key=unique.key) if unique is not None else None
            if first is not None:
                return CallResult(task=first, deduplicated=True)
            # The key was past its TTL, or the unique window had ended: released now, claim it again.
    raise Conflict("this Idempotency-Key is being claimed by another call right now; try again",
                   field="Idempotency-Key")


def _replay_checked(ports: Ports, spec: TaskSpec, args: dict[str, Any], existing: Task) -> CallResult:
    """Answer a repeated call as the first one was answered."""
    same_request(existing, spec=spec, args=args)
    if spec.runs_on_nats:
        return CallResult(task=existing, replayed=True)
    task = existing
    if task.status not in FINISHED_STATUSES:
        # The first call is still running: wait for its answer, as its own caller does.
        task = selectors.task_wait(task_id=task.id, wait_s=min(selectors.MAX_WAIT_S, spec.timeout_ms / 1000 + 5),
                                   ledger=ports.ledger, events=ports.events)
    return CallResult(outcome=_sync_outcome(spec, task), replayed=True)


def _sync_outcome(spec: TaskSpec, task: Task) -> SyncOutcome:
    """A finished sync task's outcome; raises the error its first call raised."""
    task_id = str(task.id)
    if task.status == TaskStatus.COMPLETED:
        return SyncOutcome(task_id=task_id, result_json=json.dumps(task.result), duration_ms=task.duration_ms)
    if task.status == TaskStatus.FAILED and task.error_type == "TimeoutError":
        raise TaskTimeout(task.error, task_id=task_id, error_type=task.error_type, timeout_ms=task.timeout_ms)
    if task.status == TaskStatus.FAILED:
        raise TaskFailed(task.error or f"task {spec.name} failed", task_id=task_id,
                         error_type=task.error_type, traceback=task.traceback)
    if task.status == TaskStatus.CANCELLED:
        raise Conflict(f"task {spec.name} was cancelled while it ran", task_id=task_id, error_type="Cancelled")
    raise Conflict(f"the call with this Idempotency-Key (task {task_id}) is still running; ask again later",
                   task_id=task_id, status=task.status)


def task_submit(*, ports: Ports, spec: TaskSpec, args: dict[str, Any], creator: TaskCreator,
                retry_of: str | None = None, idempotency_key: str | None = None, timing: Timing | None = None,
                retry_changes: dict[str, Any] | None = None, callback_url: str | None = None,
                parent_id: uuid.UUID | None = None, priority: str | None = None,
                unique: flow.Uniqueness | None = None) -> Task:
    """Queue one async or gpu task, or write it `scheduled` when `timing` delays it (no message until its
    run_at). `priority`: None is the task's own. `unique` claims its key (an IntegrityError when it is taken).
    Raises BrokerUnavailable (503) when its pool or NATS is missing."""
    attributes = {"neutrino.function": spec.name, "neutrino.pool": spec.pool}
    with tracing.span("neutrino.submit", attributes=attributes) as span:
        _check_route(ports, spec)
        task = _template(spec, creator, timing, args=args, retry_of_id=retry_of, idempotency_key=idempotency_key,
                         retry_changes=retry_changes, callback_url=callback_url, parent_id=parent_id,
                         priority=priority or spec.priority,
                         **({"unique_key": unique.key, "unique_until": unique.until} if unique is not None else {}))
        tracing.set_attributes(span, {"neutrino.task_id": str(task.id)})
        # The batch's INSERT, for one row: Model.save's machinery was 30% of a gateway's time per submit.
        _insert_rows(task, [_Row(id=task.id, args=args, key=idempotency_key)])
        task._state.adding = False
        if task.status == TaskStatus.SCHEDULED:
            ports.events.emit(str(task.id), TaskStatus.SCHEDULED)
            return task
        row = _Row(id=task.id, args=args, key=idempotency_key, priority=task.priority)
        task.status = _queue(ports, spec, [row])[0]
        return task


def _template(spec: TaskSpec, creator: TaskCreator, timing: Timing | None, **fields: Any) -> Task:
    """A new task row of `spec`: scheduled when `timing` delays it, else pending (at the task's own priority
    unless `fields` gives one)."""
    if timing is None:
        timing = submit_timing(spec=spec, fields={})
    fields.setdefault("priority", spec.priority)
    fields.setdefault("traceparent", tracing.current_traceparent())
    return Task(function_name=spec.name, status=TaskStatus.SCHEDULED if timing.run_at else TaskStatus.PENDING,
                pool=spec.pool, execution_mode=spec.execution_mode, created_at=timezone.now(),
                timeout_ms=spec.timeout_ms, max_retries=spec.max_retries, run_at=timing.run_at,
                expires_at=timing.expires_at, **creator.fields(), **fields)


# --- retries in bulk (one retry: tasks_app.services.retry) ----------------------------------


def tasks_retry_many(*, ports: Ports, spec: TaskSpec, originals: list[tuple[uuid.UUID, dict[str, Any]]],
                     creator: TaskCreator, key_prefix: str) -> int:
    """`task_retry` for many finished tasks of one queued function: one new task per `(task_id, args)`,
    written in one transaction and published pipelined. Returns how many new tasks were made.

    Each new task's Idempotency-Key is `<key_prefix><task id>`: the same chunk run again (a bulk action
    taken over from a dead scheduler) retries no task twice. The backlog is checked as for a batch.
    """
    if not spec.runs_on_nats:
        raise InvalidArguments(f"{spec.name} is a sync task: retry it one by one (POST /tasks/<id>/retry)",
                               task=spec.name)
    keys = {task_id: f"{key_prefix}{task_id}" for task_id, _ in originals}
    made = set(Task.objects.filter(idempotency_key__in=keys.values()).values_list("idempotency_key", flat=True))
    rows = [_Row(id=uuid.uuid4(), args=args, key=keys[task_id], retry_of=task_id, priority=spec.priority)
            for task_id, args in originals if keys[task_id] not in made]
    if not rows:  # all made by an earlier run of this chunk
        return 0
    _check_route(ports, spec)
    pool_check_backlog(ports=ports, spec=spec, adding=len(rows))
    _insert_rows(Task(function_name=spec.name, status=TaskStatus.PENDING, pool=spec.pool,
                      execution_mode=spec.execution_mode, created_at=timezone.now(), timeout_ms=spec.timeout_ms,
                      max_retries=spec.max_retries, priority=spec.priority, **creator.fields()), rows)
    _queue(ports, spec, rows)
    return len(rows)


# --- backpressure ----------------------------------------------------------------------------


def pool_backlog(*, pool: str, up_to: int) -> int:
    """Pending + queued rows of `pool`, counted no further than `up_to` (an index range scan)."""
    waiting = Task.objects.filter(pool=pool, status__in=[TaskStatus.PENDING, TaskStatus.QUEUED])
    return waiting[:up_to].count()


def pool_check_backlog(*, ports: Ports, spec: TaskSpec, adding: int) -> None:
    """Raise Overloaded (429) when `adding` more tasks would take the pool past its max_backlog."""
    pool = ports.pools.route(spec.pool)
    if pool is None or pool.max_backlog <= 0:
        return
    if adding > pool.max_backlog:
        raise InvalidArguments(
            f"a batch of {adding} tasks is larger than pool {spec.pool}'s max_backlog of {pool.max_backlog}; "
            "send smaller batches",
            task=spec.name, pool=spec.pool,
        )
    backlog = pool_backlog(pool=spec.pool, up_to=pool.max_backlog + 1)
    if backlog + adding > pool.max_backlog:
        raise Overloaded(
            f"pool {spec.pool} is full: {backlog}{'+' if backlog > pool.max_backlog else ''} tasks wait "
            f"(max_backlog {pool.max_backlog}); {spec.name} was not queued, retry in {BACKLOG_RETRY_AFTER_S} s",
            retry_after_s=BACKLOG_RETRY_AFTER_S,
            reason="backlog",
            pool=spec.pool,
        )


# --- bulk submit -----------------------------------------------------------------------------


def task_submit_many(*, ports: Ports, spec: TaskSpec, items: list[Any], key: str | None,
                     creator: TaskCreator, timing: Timing | None = None, priority: object = None) -> BatchResult:
    """Queue one task per item (`{"args": {...}}`), all or nothing, recording their `creator`; the ids in item order.

    `timing` applies to every item (one run_at and one expiry for the batch), and so does `priority` (as the
    body gave it; None: the task's own).

    Unique tasks (`unique_for_s`) are refused (422): submit them one by one, so that each duplicate is
    answered on its own instead of failing the whole batch.

    Sync tasks are refused (422): a batch would hold one request for the sum of their run times;
    call them one by one, or make the task async.
    """
    if not spec.runs_on_nats:
        raise InvalidArguments(
            f"batch is for queued tasks; {spec.name} is a sync task: call POST /api/{spec.name} once per item",
            task=spec.name,
        )
    limit = neutrino_settings().batch_max
    if spec.unique_for_s is not None:
        raise InvalidArguments(
            f"{spec.name} is a unique task (unique_for_s): submit it one by one (POST /api/{spec.name}), so that a "
            "duplicate is answered with its first task instead of failing the batch", task=spec.name)
    level = flow.submit_priority(spec=spec, value=priority)
    if not items:
        raise InvalidArguments("'items' is empty; send at least one {\"args\": {...}}", field="items")
    if len(items) > limit:
        raise InvalidArguments(
            f"a batch holds at most {limit} items (NEUTRINO_BATCH_MAX), this one has {len(items)}; split it",
            field="items", limit=limit,
        )
    all_args = [_item_args(spec, index, item) for index, item in enumerate(items)]
    keys = [f"{key}#{index}" for index in range(len(items))] if key is not None else None
    if keys is not None:
        replay = _batch_replay(spec, keys, all_args)
        if replay is not None:
            return replay
    _check_route(ports, spec)
    pool_check_backlog(ports=ports, spec=spec, adding=len(items))
    rate_check_submit(spec=spec, args_list=all_args)  # [limits] reject mode: all the batch's starts, or 429
    template = _template(spec, creator, timing, priority=level)
    rows = [_Row(id=uuid.uuid4(), args=args, key=keys[index] if keys is not None else None, priority=level)
            for index, args in enumerate(all_args)]
    try:
        _insert_rows(template, rows)
    except IntegrityError:
        replay = _batch_replay(spec, keys, all_args) if keys is not None else None
        if replay is None:
            raise
        return replay
    if template.status == TaskStatus.SCHEDULED:
        ports.events.emit_many([str(row.id) for row in rows], TaskStatus.SCHEDULED)
        return BatchResult(items=[(str(row.id), TaskStatus.SCHEDULED) for row in rows])
    statuses = _queue(ports, spec, rows)
    return BatchResult(items=[(str(row.id), status) for row, status in zip(rows, statuses, strict=True)])


# --- the one queueing path ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    id: uuid.UUID
    args: dict[str, Any]
    key: str | None
    retry_of: uuid.UUID | None = None  # None: the template's
    group_index: int | None = None  # None: the template's
    priority: str = NORMAL  # the subject its message goes to (the row's own column is the template's)


def _check_route(ports: Ports, spec: TaskSpec) -> None:
    """Raise BrokerUnavailable (503) unless the task's pool takes queued tasks and NATS is configured."""
    pool = ports.pools.route(spec.pool)
    if pool is None or not pool.enabled or not pool.queued or pool.draining:
        state = ("does not exist" if pool is None else "is disabled" if not pool.enabled
                 else "is an http pool" if not pool.queued else "is draining (it takes no new tasks)")
        raise BrokerUnavailable(
            f"pool {spec.pool} {state}; an admin must create or enable it before {spec.name} can run",
            task=spec.name, pool=spec.pool,
        )
    if ports.broker is None:
        raise BrokerUnavailable(
            f"task {spec.name} is queued through NATS, but this server has no NATS connection "
            "configured (set NEUTRINO_NATS_URL or pass --nats-url)",
            task=spec.name,
        )


WhenDown = Literal["fail", "leave pending", "raise"]


class QueueTarget(Protocol):
    """What the messages of a group of rows share: a `TaskSpec`, or a released row's own columns."""

    @property
    def name(self) -> str: ...
    @property
    def pool(self) -> str: ...
    @property
    def max_retries(self) -> int: ...
    @property
    def timeout_ms(self) -> int: ...


def queue_released(*, ports: Ports, target: QueueTarget, rows: list[tuple[uuid.UUID, dict[str, Any]]],
                   priority: str = NORMAL) -> list[str]:
    """Publish delayed tasks just released to pending (`tasks_app.services.delays`), as a submit publishes.

    Raises BrokerDown with the rows left pending (their caller puts them back to scheduled).
    """
    return _queue(ports, target, [_Row(id=task_id, args=args, key=None, priority=priority) for task_id, args in rows],
                  when_down="raise")


def _queue(ports: Ports, spec: QueueTarget, rows: list[_Row], *, when_down: WhenDown = "fail") -> list[str]:
    """Publish the pending `rows` and hand the acknowledged ones to the ledger; each row's status, in order.

    The caller hears "queued" as soon as the broker has a task; its row follows within one ledger batch
    (the writer publishes the event). A worker may claim it first: its claim accepts pending rows too.
    NATS down (`when_down`): "fail" fails the rows and raises BrokerUnavailable (a submit's caller hears it);
    "leave pending" leaves them pending for the sweeper (a schedule's rows); "raise" raises BrokerDown with
    the rows pending (released delayed tasks: their caller puts them back to scheduled).
    """
    with tracing.span("neutrino.publish", kind="producer",
                      attributes={"messaging.system": "nats", "neutrino.function": spec.name,
                                  "neutrino.pool": spec.pool, "neutrino.tasks": len(rows)}):
        return _publish(ports, spec, rows, when_down, tracing.current_traceparent())


def _publish(ports: Ports, spec: QueueTarget, rows: list[_Row], when_down: WhenDown, traceparent: str) -> list[str]:
    messages = [
        (task_subject(spec.pool, spec.name, row.priority),
         encode_task_message(task_id=str(row.id), function=spec.name, args=row.args, max_retries=spec.max_retries,
                             timeout_ms=spec.timeout_ms, traceparent=traceparent), str(row.id))
        for row in rows
    ]
    ids = [row.id for row in rows]
    results: list[int | BrokerError]
    try:
        if len(messages) == 1:
            # One task: the blocking publisher in the caller's thread, no hop to the bridge's loop.
            results = [ports.publisher.publish_task(messages[0][0], messages[0][1], msg_id=messages[0][2])]
        else:
            results = ports.publisher.publish_tasks(messages)
    except BrokerDown as exc:
        if when_down == "leave pending":
            return _settle(ports, spec, rows, [exc] * len(rows))
        if when_down == "raise":
            raise
        # The keys are released: the caller's retry with them, once NATS is back, makes new tasks.
        _update_pending(ids, status=TaskStatus.FAILED, completed_at=timezone.now(), error_type="BrokerUnavailable",
                        idempotency_key=None, error=f"not queued: {exc}; submit it again when NATS is back")
        what = f"task {spec.name} was" if len(rows) == 1 else f"none of the {len(rows)} {spec.name} tasks was"
        raise BrokerUnavailable(f"NATS is unavailable, {what} not queued: {exc}", task=spec.name,
                                **({"task_id": str(ids[0])} if len(rows) == 1 else {}))
    except BrokerError as exc:
        results = [exc] * len(rows)
    return _settle(ports, spec, rows, results)


def _settle(ports: Ports, spec: QueueTarget, rows: list[_Row], results: list[int | BrokerError]) -> list[str]:
    """Hand the acknowledged rows to the ledger; note on the others that the sweeper will publish them."""
    statuses: list[str] = []
    unconfirmed = []
    for row, result in zip(rows, results, strict=True):
        if isinstance(result, BrokerError):
            unconfirmed.append(row.id)
            statuses.append(TaskStatus.PENDING)
        else:
            ports.ledger.record_queued(str(row.id))
            statuses.append(TaskStatus.QUEUED)
    if unconfirmed:
        logger.warning("%d of %d %s publishes were not confirmed; the sweeper republishes them",
                       len(unconfirmed), len(rows), spec.name)
        _update_pending(unconfirmed, error="broker did not confirm the publish yet; it will be republished")
    return statuses


# --- rows of a group (tasks_app.services.groups) ------------------------------------------------


def item_args(*, spec: TaskSpec, index: int, item: Any) -> dict[str, Any]:
    """One batch or group item (`{"args": {...}}`), validated; InvalidArguments names its index."""
    return _item_args(spec, index, item)


def check_route(*, ports: Ports, spec: TaskSpec) -> None:
    """Raise BrokerUnavailable (503) unless `spec`'s pool takes queued tasks and NATS is configured."""
    _check_route(ports, spec)


def tasks_insert_members(*, spec: TaskSpec, creator: TaskCreator, all_args: list[dict[str, Any]],
                         group_id: uuid.UUID, parent_id: uuid.UUID | None, first_index: int = 0) -> list[uuid.UUID]:
    """INSERT pending member rows of a group, `group_index` counting from `first_index`, in the caller's
    transaction; queue them after its commit with `tasks_queue_members`."""
    template = _template(spec, creator, None, group_id=group_id, parent_id=parent_id)
    rows = [_Row(id=uuid.uuid4(), args=args, key=None, group_index=first_index + index, priority=spec.priority)
            for index, args in enumerate(all_args)]
    _insert_rows(template, rows)
    return [row.id for row in rows]


def tasks_queue_members(*, ports: Ports, spec: TaskSpec, rows: list[tuple[uuid.UUID, dict[str, Any]]]) -> list[str]:
    """Publish committed pending rows of `spec` through the one queueing path; NATS down or an unconfirmed
    publish leaves them pending for the pool's sweeper (the group exists already: failing them would fire it)."""
    return _queue(ports, spec, [_Row(id=task_id, args=args, key=None, priority=spec.priority)
                                for task_id, args in rows], when_down="leave pending")


# --- rows the scheduler makes (tasks_app.services.schedules) -----------------------------------


def task_insert_pending(*, spec: TaskSpec, args: dict[str, Any], creator: TaskCreator) -> Task:
    """INSERT one pending row of `spec` in the caller's transaction (queue it with `task_queue_inserted`)."""
    task = Task(function_name=spec.name, status=TaskStatus.PENDING, pool=spec.pool,
                execution_mode=spec.execution_mode, created_at=timezone.now(), timeout_ms=spec.timeout_ms,
                max_retries=spec.max_retries, args=args, priority=spec.priority, **creator.fields())
    _insert_rows(task, [_Row(id=task.id, args=args, key=None)])
    task._state.adding = False
    return task


def task_queue_inserted(*, ports: Ports, spec: TaskSpec, tasks: list[Task]) -> list[str]:
    """Publish committed pending rows through the one queueing path; each row's status, in order.

    A pool that takes no tasks (missing, disabled, draining) fails them with the reason, so the history
    says why; NATS down or an unconfirmed publish leaves them pending for the pool's sweeper.
    """
    ids = [task.id for task in tasks]
    try:
        _check_route(ports, spec)
    except BrokerUnavailable as exc:
        _update_pending(ids, status=TaskStatus.FAILED, completed_at=timezone.now(), error_type="BrokerUnavailable",
                        error=f"not queued: {exc.message}")
        ports.events.emit_many([str(task_id) for task_id in ids], TaskStatus.FAILED)
        return [TaskStatus.FAILED] * len(ids)
    rows = [_Row(id=task.id, args=task.args if isinstance(task.args, dict) else {}, key=None, priority=task.priority)
            for task in tasks]
    return _queue(ports, spec, rows, when_down="leave pending")


def _update_pending(ids: list[uuid.UUID], **fields: Any) -> None:
    for start in range(0, len(ids), UPDATE_CHUNK):
        Task.objects.filter(id__in=ids[start:start + UPDATE_CHUNK], status=TaskStatus.PENDING).update(**fields)


def _insert_rows(template: Task, rows: list[_Row]) -> None:
    """INSERT the batch's rows in one transaction, with one prepared statement run for every row.

    Only the id, the args, the key (and a retry's `retry_of`) differ between a batch's rows: the other
    columns (the creator too) are prepared once from `template`, which keeps a 1,000-row batch to
    milliseconds where `bulk_create` prepares 24 values per row.
    """
    fields = Task._meta.concrete_fields
    constant = {f.attname: f.get_db_prep_save(getattr(template, f.attname), connection) for f in fields}
    # Concrete columns all: get_field's type admits relations too, and Field.column's admits None.
    id_field, args_field, key_field, retry_field = (cast("Field[Any, Any]", Task._meta.get_field(name))
                                                    for name in ("id", "args", "idempotency_key", "retry_of"))
    sql = _insert_sql(connection.vendor)
    params = []
    for row in rows:
        values = {**constant,
                  "id": id_field.get_db_prep_save(row.id, connection),
                  "args": args_field.get_db_prep_save(row.args, connection),
                  "idempotency_key": key_field.get_db_prep_save(row.key, connection)}
        if row.retry_of is not None:
            values["retry_of_id"] = retry_field.get_db_prep_save(row.retry_of, connection)
        if row.group_index is not None:
            values["group_index"] = row.group_index
        params.append([values[f.attname] for f in fields])
    if len(params) == 1:
        with connection.cursor() as cursor:  # one statement is atomic without a transaction around it
            cursor.execute(sql, params[0])
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(sql, params)


@functools.cache
def _insert_sql(vendor: str) -> str:
    """The INSERT of every column of a task row (per database vendor: a process uses one)."""
    fields = Task._meta.concrete_fields
    columns = ", ".join(connection.ops.quote_name(cast(str, f.column)) for f in fields)
    return (f"INSERT INTO {connection.ops.quote_name(Task._meta.db_table)} ({columns}) "
            f"VALUES ({', '.join(['%s'] * len(fields))})")


def _item_args(spec: TaskSpec, index: int, item: Any) -> dict[str, Any]:
    if not isinstance(item, dict) or set(item) - {"args"}:
        raise InvalidArguments(
            f"item {index}: each item is an object like {{\"args\": {{...}}}}",
            index=index, fields=[{"field": f"items.{index}", "message": "must be {\"args\": {...}}"}],
        )
    try:
        return task_validate_args(spec=spec, args=item.get("args", {}))
    except InvalidArguments as exc:
        fields = [{**f, "field": f"items.{index}.args.{f['field']}"} for f in exc.details.get("fields", [])]
        raise InvalidArguments(f"item {index}: {exc.message}; nothing was submitted", index=index,
                               task=spec.name, fields=fields)


def _batch_replay(spec: TaskSpec, keys: list[str], all_args: list[dict[str, Any]]) -> BatchResult | None:
    first = task_by_key(key=keys[0])
    if first is None:
        # Released or never used: free every item key of the batch for the new rows.
        Task.objects.filter(idempotency_key__in=keys).update(idempotency_key=None)
        return None
    # One key past the end: the first batch with this key was longer than this one.
    beyond = keys[0][: -len("#0")] + f"#{len(keys)}"
    found = {t.idempotency_key: t for t in Task.objects.filter(idempotency_key__in=[*keys, beyond])}
    tasks = [found.get(k) for k in keys]
    if beyond in found or any(t is None for t in tasks) or any(
        t is not None and (t.function_name != spec.name or t.args != json.loads(json.dumps(a)))
        for t, a in zip(tasks, all_args, strict=True)
    ):
        raise Conflict(
            f"this Idempotency-Key was already used for a different batch (first task {first.id}); "
            "use a new key for a new batch",
            task_id=str(first.id),
        )
    return BatchResult(items=[(str(t.id), t.status) for t in tasks if t is not None], replayed=True)
