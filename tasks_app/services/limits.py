"""[limits] Concurrency per key and rate limits, held in the database so that every worker and gateway
shares them (declared with `@app.task(concurrency_key=..., max_concurrency=..., rate_limit=...)`,
`neutrino.limits`).

- A limited task's claim (`task_mark_running_limited`) is the ordinary claim plus, in the same
  transaction, a count of the running rows of its function and key, and a start taken from its rate
  budget. When either is full the whole claim is rolled back and the worker is told how long to wait
  (`LimitWait`): the row stays queued and no attempt is spent (the worker offers the message again,
  `workers.pool_worker.limits`). A slot is a running row, so it is free again however the task ends
  (completed, failed, retrying, cancelled, handed back), and a dead worker's slot comes back when its
  message is redelivered after ack_wait and the new delivery takes its row over.
- Race-free: on SQLite the claim's UPDATE holds the database's write lock until the count is read
  and the transaction commits; on PostgreSQL a transaction-level advisory lock per function and key
  serialises the claims of one key (claims of other keys do not wait).
- Rates (`rate_take`): one `RateBucket` row per function (or function and key), taken with one
  conditional UPDATE (GCRA): no lock, no read first. Wait mode takes a start at the claim; reject mode
  takes it at the submit (`rate_check_submit`, 429 with Retry-After when spent), and the claim then
  does not take it again.

What it cannot do: a message whose function name differs from its row's (only a forged one does) is
limited as the message's function. A waiting task is offered again every `CONCURRENCY_RETRY_S`, so a
freed slot goes to whichever waiting task of that key comes next, in rough queue order, not strictly
the oldest.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction

from neutrino.app import TaskSpec
from neutrino.limits import Limits, Rate
from tasks_app.core.errors import Overloaded
from tasks_app.core.ports import TaskEvents
from tasks_app.models import RateBucket, Task, TaskStatus
from tasks_app.services.tasks import ClaimedTask, task_mark_running

# A task that found its key's slots taken is offered again after this long: short enough that a freed
# slot is not left idle for long, long enough that waiting tasks cost a few claims a second each.
CONCURRENCY_RETRY_S = 0.25
# A task over its rate waits until the budget has room, but is looked at again at least this often.
MAX_WAIT_S = 5.0


@dataclass(frozen=True)
class LimitWait:
    """A claim refused because a limit is full: the row stays queued; offer the task again in `retry_in_s`."""

    reason: str  # "concurrency" or "rate"
    retry_in_s: float


class _Refused(Exception):
    def __init__(self, wait: LimitWait, *, task_id: str, key: str) -> None:
        self.wait = wait
        self.task_id = task_id
        self.key = key


def task_mark_running_limited(*, events: TaskEvents, task_id: str, pool: str, attempt: int, worker_id: str,
                              limits: Limits) -> ClaimedTask | LimitWait | None:
    """`task_mark_running` for a task with limits: claimed, refused for now (`LimitWait`), or None as there."""
    held = _HeldEvents(events)
    try:
        with transaction.atomic():
            claimed = task_mark_running(events=held, task_id=task_id, pool=pool, attempt=attempt,
                                        worker_id=worker_id)
            if claimed is not None:
                _take_slot(claimed, limits)
    except _Refused as refused:
        # Rolled back: the row is as it was, and the running event was never sent. Its key is written
        # on its own, so that the task's page says what it waits for.
        if refused.key:
            _write_key(refused.task_id, refused.key, only_if_unset=True)
        return refused.wait
    held.send()
    return claimed


def _take_slot(claimed: ClaimedTask, limits: Limits) -> None:
    """Raise _Refused unless the claimed task fits its key's concurrency and its rate."""
    key = limits.key_of(claimed.args)
    if key:
        _write_key(claimed.task_id, key)
    if limits.max_concurrency is not None:
        with connection.cursor() as cursor:
            _lock_key(cursor, f"{claimed.function}\x00{key}")
            # The status is written into the statement, not bound: only then may SQLite (and a generic
            # PostgreSQL plan) read the partial index of running rows; bound, it scanned the function's rows.
            cursor.execute(f"SELECT COUNT(*) FROM {_table()} WHERE status = '{TaskStatus.RUNNING.value}' "
                           "AND function_name = %s AND concurrency_key = %s AND id <> %s",
                           [claimed.function, key, _pk(claimed.task_id)])
            (others,) = cursor.fetchone() or (0,)
        if others >= limits.max_concurrency:
            raise _Refused(LimitWait(reason="concurrency", retry_in_s=CONCURRENCY_RETRY_S),
                           task_id=claimed.task_id, key=key)
    if limits.rate is not None and limits.rate_at_claim:
        wait_s = rate_take(function=claimed.function, key=limits.rate_key(claimed.args), rate=limits.rate)
        if wait_s > 0:
            raise _Refused(LimitWait(reason="rate", retry_in_s=min(wait_s, MAX_WAIT_S)),
                           task_id=claimed.task_id, key=key)


def _write_key(task_id: str, key: str, *, only_if_unset: bool = False) -> None:
    sql = f"UPDATE {_table()} SET concurrency_key = %s WHERE id = %s"
    with connection.cursor() as cursor:
        cursor.execute(sql + (" AND concurrency_key = ''" if only_if_unset else ""), [key, _pk(task_id)])


def _table() -> str:
    return connection.ops.quote_name(Task._meta.db_table)


def _pk(task_id: str) -> Any:
    return Task._meta.pk.get_db_prep_value(uuid.UUID(task_id), connection)


def _lock_key(cursor: Any, name: str) -> None:
    """PostgreSQL: hold a lock on `name` until the transaction ends (SQLite: its write lock does that)."""
    if connection.vendor != "postgresql":
        return
    number = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [number])


# --- rates ----------------------------------------------------------------------------------------


def rate_take(*, function: str, key: str, rate: Rate, count: int = 1, now_s: float | None = None) -> float:
    """Take `count` starts from the budget of `function` (and `key`): 0.0 when taken, else the seconds
    until they would fit (nothing taken). One conditional UPDATE when the row exists."""
    now_s = time.time() if now_s is None else now_s
    cost = rate.interval_s * count
    slack = rate.period_s - cost  # how far ahead of now the arrival time may be before this start
    if slack < 0:
        return math.inf  # more starts at once than the whole period allows
    table = connection.ops.quote_name(RateBucket._meta.db_table)
    greatest = "GREATEST" if connection.vendor == "postgresql" else "MAX"
    sql = (f"UPDATE {table} SET tat_s = {greatest}(tat_s, %s) + %s "
           "WHERE function_name = %s AND key = %s AND tat_s <= %s")
    for _ in range(2):
        with connection.cursor() as cursor:
            cursor.execute(sql, [now_s, cost, function, key, now_s + slack])
            if cursor.rowcount:
                return 0.0
        tat_s = RateBucket.objects.filter(function_name=function, key=key).values_list("tat_s", flat=True).first()
        if tat_s is not None:
            return max(tat_s - slack - now_s, 0.001)
        RateBucket.objects.bulk_create([RateBucket(function_name=function, key=key, tat_s=0.0)],
                                       ignore_conflicts=True)
    return rate.interval_s  # pragma: no cover - the row was deleted between the INSERT and the UPDATE


def rate_check_submit(*, spec: TaskSpec, args_list: Sequence[dict[str, Any]]) -> None:
    """Reject mode: take one start per task to submit, all or none; raise Overloaded (429 with
    Retry-After) when the rate is spent. Nothing to do for tasks without a reject-mode rate."""
    limits = spec.limits
    if limits is None or limits.rate is None or not limits.rate_at_submit:
        return
    rate = limits.rate
    needed = Counter(limits.rate_key(args) for args in args_list)
    with transaction.atomic():  # an Overloaded raised inside gives back the starts already taken
        for key, count in needed.items():
            wait_s = rate_take(function=spec.name, key=key, rate=rate, count=count)
            if wait_s > 0:
                retry_after_s = max(1, math.ceil(min(wait_s, rate.period_s)))
                what = f"{spec.name}{' for key ' + repr(key) if key else ''}"
                tasks = "the task was" if len(args_list) == 1 else f"none of the {len(args_list)} tasks was"
                raise Overloaded(
                    f"rate limit of {what} reached ({rate}); {tasks} submitted, retry in {retry_after_s} s",
                    retry_after_s=retry_after_s, reason="rate_limit", task=spec.name, rate_limit=str(rate),
                    **({"concurrency_key": key} if key else {}),
                )


# --- events held until the claim stands -------------------------------------------------------------


class _HeldEvents:
    """A TaskEvents that keeps `emit`s until `send()`: a claim that is rolled back must announce nothing."""

    def __init__(self, events: TaskEvents) -> None:
        self.events = events
        self.held: list[tuple[str, str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def emit(self, task_id: str, status: str, **extra: Any) -> None:
        with self.lock:
            self.held.append((task_id, status, extra))

    def emit_many(self, task_ids: Sequence[str], status: str) -> None:
        for task_id in task_ids:
            self.emit(task_id, status)

    def emit_log(self, task_id: str, attempt: int) -> None:
        self.events.emit_log(task_id, attempt)

    def watch(self, task_id: str) -> contextlib.AbstractContextManager[threading.Event]:
        return self.events.watch(task_id)

    def send(self) -> None:
        for task_id, status, extra in self.held:
            self.events.emit(task_id, status, **extra)


