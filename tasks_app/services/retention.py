"""Deletes the finished tasks the retention policy no longer keeps (`tasks_app.selectors.retention`).

Each batch is one short transaction: it picks up to `batch_size` ids of one status older than that
status's cutoff (oldest first, along the (status, created_at) index), deletes their TaskAttempt and
TaskLogChunk rows, unlinks the ScheduleFire rows and the retries that point at them (those keep existing:
their foreign keys are SET_NULL), then deletes the tasks, still only where they are finished. A pause after
each batch (at least as long as the batch) lets the other writers (the ledger, the workers) in; on SQLite a
batch holds the one write lock for its length.
A round stops after `max_rows` or `max_seconds`, so the scheduler's other jobs, which run one after the
other, wait at most one short round; what is left goes in the next round.

Several pruners may run at once (two scheduler processes, `neutrino prune` beside one): on PostgreSQL a
batch locks the rows it picked (FOR UPDATE SKIP LOCKED) and another pruner skips them; on SQLite write
transactions run one at a time, so the second finds the rows gone and deletes nothing, which is fine.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection, transaction

from tasks_app.models import FINISHED_STATUSES, ScheduleFire, Task, TaskAttempt, TaskLogChunk
from tasks_app.selectors.retention import RetentionPolicy

logger = logging.getLogger("neutrino.retention")


@dataclass(frozen=True)
class PruneLimits:
    # Ids per batch. On SQLite a batch of 1,000 held the write lock 250-650 ms on a busy 2-core machine
    # (the primary key is a random UUID: each row is a page of its index), 300 about 150 ms, for the
    # same rows/s (bench/retention.py).
    batch_size: int = 500
    # Between batches, with no transaction open: this, or as long as the last batch took if longer, so
    # the pruner holds the database at most half the time however slow it runs.
    pause_s: float = 0.05
    max_rows: int | None = 10_000  # per round; None: until nothing is left (`neutrino prune`)
    # A round starts no batch after this many seconds (None: no limit), so that a slow database does not
    # hold the scheduler's other jobs (delayed tasks, schedules) for long.
    max_seconds: float | None = 2.0


@dataclass
class PruneReport:
    deleted: dict[str, int] = field(default_factory=dict)  # per status
    batches: int = 0
    longest_batch_s: float = 0.0  # one batch's transaction: how long it held its locks
    longest_delete_s: float = 0.0  # the DELETE of the task rows alone
    elapsed_s: float = 0.0
    complete: bool = True  # False: the round stopped at max_rows with rows left

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


def tasks_prune(*, policy: RetentionPolicy, now: datetime, limits: PruneLimits = PruneLimits(),
                sleep: Callable[[float], None] = time.sleep) -> PruneReport:
    """One round: delete the finished tasks older than the policy keeps them, batch by batch, the statuses
    taking turns so that a large backlog of one does not hold up the others."""
    cutoffs = policy.cutoffs(now=now)
    report = PruneReport(deleted=dict.fromkeys(cutoffs, 0))
    size = _batch_size(limits.batch_size)
    started = time.monotonic()
    left = list(cutoffs)  # statuses whose last batch came back full
    pause_s = 0.0  # after a batch that deleted rows: let the other writers in before the next
    while left:
        for status in list(left):
            room = size if limits.max_rows is None else min(size, limits.max_rows - report.total)
            spent = time.monotonic() - started
            if room <= 0 or (report.batches and limits.max_seconds is not None and spent >= limits.max_seconds):
                report.complete = False
                left = []
                break
            if pause_s:
                sleep(pause_s)
            began = time.monotonic()
            picked, deleted = _prune_batch(status=status, cutoff=cutoffs[status], size=room, report=report)
            report.deleted[status] += deleted
            pause_s = max(limits.pause_s, time.monotonic() - began) if picked else 0.0
            if picked < room:
                left.remove(status)
    report.elapsed_s = time.monotonic() - started
    if report.total:
        logger.info("retention: deleted %d finished tasks (%s) in %d batches, %.1f s, longest batch %.0f ms%s",
                    report.total, ", ".join(f"{s} {n}" for s, n in report.deleted.items() if n), report.batches,
                    report.elapsed_s, report.longest_batch_s * 1000,
                    "" if report.complete else "; more are left for the next round")
    return report


def _batch_size(wanted: int) -> int:
    """`wanted`, or fewer where the database takes fewer parameters in one statement (Django's SQLite
    backend assumes the old 999) less the statement's own few."""
    limit = connection.features.max_query_params
    return max(1, min(wanted, limit - 4)) if limit else max(1, wanted)


def _prune_batch(*, status: str, cutoff: datetime, size: int, report: PruneReport) -> tuple[int, int]:
    """Delete up to `size` tasks of `status` created before `cutoff`; returns (picked, deleted)."""
    began = time.monotonic()
    with transaction.atomic():
        ids = list(Task.objects.select_for_update(skip_locked=True)  # no-op where FOR UPDATE is unknown
                   .filter(status=status, created_at__lt=cutoff)
                   .order_by("created_at").values_list("id", flat=True)[:size])
        if not ids:
            return 0, 0
        # Their attempts and logs go with them (neither has relations of its own: one DELETE each).
        TaskAttempt.objects.filter(task_id__in=ids).delete()
        TaskLogChunk.objects.filter(task_id__in=ids).delete()
        # IS NOT NULL besides the ids: SQLite's ANALYZE counts a column's NULLs as one value, so on a
        # mostly-NULL column its planner would scan the table rather than look each id up in the index.
        ScheduleFire.objects.filter(task_id__in=ids, task__isnull=False).update(task=None)
        Task.objects.filter(retry_of_id__in=ids, retry_of__isnull=False).update(retry_of=None)
        delete_began = time.monotonic()
        deleted = _delete_finished(ids)
        report.longest_delete_s = max(report.longest_delete_s, time.monotonic() - delete_began)
    report.batches += 1
    report.longest_batch_s = max(report.longest_batch_s, time.monotonic() - began)
    return len(ids), deleted


def _delete_finished(ids: list[uuid.UUID]) -> int:
    """DELETE the rows by id, still only if finished. One statement, not `QuerySet.delete()`, which
    would read every row (its JSON columns too) to collect what points at it: done above instead."""
    pk = Task._meta.pk
    quote = connection.ops.quote_name
    id_marks = ", ".join(["%s"] * len(ids))
    status_marks = ", ".join(["%s"] * len(FINISHED_STATUSES))
    sql = (f"DELETE FROM {quote(Task._meta.db_table)} WHERE {quote(str(pk.column))} IN ({id_marks}) "
           f"AND {quote('status')} IN ({status_marks})")
    params = [*(pk.get_db_prep_value(i, connection) for i in ids), *(status.value for status in FINISHED_STATUSES)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.rowcount)
