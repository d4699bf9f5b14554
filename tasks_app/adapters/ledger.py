"""The batching ledger writer: task rows written off the request path.

A sync call enqueues a "started" record and a "finished" record and returns; a
background thread drains the queue and writes whole batches in one
transaction. When a call's two records land in the same batch the row is
inserted once, already finished, so a burst of short calls costs one INSERT
per task.

What it guarantees: nothing is dropped. The queue is bounded; when the writer
falls behind, `record_*` blocks the caller until there is room (backpressure
instead of loss). `close()` flushes what is buffered; it runs at interpreter
exit and from the server's worker-exit hook. What it cannot guarantee: a
process killed with SIGKILL loses the records still in its buffer (at most
one batch interval's worth).

One bad row never costs the others: what a task produced is made storable
first (NUL characters and lone surrogates escaped, `tasks_app.core.storable`),
and a batch the database still refuses is written again task by task, so only
the refused task's records are dropped (and logged with its id). When the
database itself fails (down, restarting, locked) the batch is retried with
backoff for up to WRITE_GIVE_UP_S (meanwhile the queue fills and callers wait),
then dropped and logged.

The writer also ends sync rows that nobody will finish: a row still `running` well
past its task's timeout belonged to a server process that was killed between the
row's start and finish records (`fail_abandoned_sync_rows`, every SWEEP_EVERY_S).
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import DataError, IntegrityError, close_old_connections, connection, transaction
from django.utils import timezone

from tasks_app.core.storable import storable_fields
from tasks_app.models import Task, TaskLogChunk, TaskStatus

logger = logging.getLogger("neutrino.ledger")

BATCH_MAX = 500
PUT_WAIT_S = 5.0
# After the first record of a batch, wait this long for more: a sync call's start and finish then
# land in one batch (one INSERT instead of INSERT + UPDATE) and the writer takes the GIL and the
# database lock far less often. A flush request ends the wait at once.
BATCH_LINGER_S = 0.02
# A database restart or failover takes seconds; dropping records after a few tries would lose the
# rows of every sync call answered meanwhile.
WRITE_GIVE_UP_S = 60.0
SWEEP_EVERY_S = 30.0
# A sync task's child is killed at its timeout and its finish record follows within a batch; a row
# still running this long after its timeout has no process left to finish it.
ABANDONED_AFTER_TIMEOUT_S = 60.0
# Errors a row brings on itself (a value or a constraint the database refuses): writing it again cannot
# help, so its batch is written task by task and the task that still fails is dropped at once.
ROW_ERRORS = (DataError, IntegrityError, ValueError, TypeError, UnicodeError)


@dataclass
class _Record:
    kind: str  # "start" | "finish" | "progress" | "queued" | "log"
    task_id: str
    fields: dict[str, Any]


@dataclass
class _Flush:
    done: threading.Event = field(default_factory=threading.Event)


WrittenHook = Callable[[list[dict[str, Any]]], None]


class LedgerWriter:
    def __init__(self, *, queue_size: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self._queue: queue.Queue[_Record | _Flush | None] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.on_written: list[WrittenHook] = []

    # --- producer side (request threads) ---------------------------------------------------

    def record_start(self, task_id: str, **fields: Any) -> None:
        """A task started: `fields` are the row's columns (function_name, pool, ...)."""
        self._put(_Record("start", task_id, fields))

    def record_finish(self, task_id: str, **fields: Any) -> None:
        """A task ended: `fields` hold status, completed_at, result, error, ..."""
        self._put(_Record("finish", task_id, fields))

    def record_queued(self, task_id: str) -> None:
        """JetStream acknowledged a queued task: pending -> queued, unless a worker already claimed it."""
        self._put(_Record("queued", task_id, {}))

    def record_progress(self, task_id: str, fraction: float, message: str) -> None:
        self._put(_Record("progress", task_id, {"progress": fraction, "progress_message": message}))

    def record_log(self, task_id: str, attempt: int, seq: int, data: bytes, dropped_bytes: int) -> None:
        """A piece of what the task wrote (`TaskLogChunk`), stored after the task's row is."""
        self._put(_Record("log", task_id, {"attempt": attempt, "seq": seq, "data": data,
                                           "dropped_bytes": dropped_bytes}))

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything recorded so far is written. Returns False on timeout."""
        if not self.enabled or self._thread is None:
            return True
        marker = _Flush()
        self._put(marker)
        return marker.done.wait(timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        self._queue.put(None, timeout=timeout_s)
        thread.join(timeout_s)
        if thread.is_alive():
            logger.error("ledger writer did not finish within %.0f s; %d records unwritten",
                         timeout_s, self._queue.qsize())

    def _put(self, item: _Record | _Flush) -> None:
        if not self.enabled:
            if isinstance(item, _Flush):
                item.done.set()
            return
        self._ensure_thread()
        while True:
            try:
                self._queue.put(item, timeout=PUT_WAIT_S)
                return
            except queue.Full:
                logger.warning("ledger writer is behind (%d records buffered); caller waits", self._queue.qsize())

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="neutrino-ledger", daemon=True)
                self._thread.start()
                atexit.register(self.close)

    # --- consumer side (the writer thread) -------------------------------------------------

    def _run(self) -> None:
        swept_at = 0.0
        try:
            while True:
                if time.monotonic() - swept_at >= SWEEP_EVERY_S:
                    swept_at = time.monotonic()
                    self._sweep()
                try:
                    first = self._queue.get(timeout=SWEEP_EVERY_S)
                except queue.Empty:
                    continue
                batch: list[_Record | _Flush | None] = [first]
                linger_until = time.monotonic() + BATCH_LINGER_S
                while len(batch) < BATCH_MAX and isinstance(batch[-1], _Record):
                    remaining = linger_until - time.monotonic()
                    try:
                        batch.append(self._queue.get(timeout=remaining) if remaining > 0
                                     else self._queue.get_nowait())
                    except queue.Empty:
                        break
                records = [item for item in batch if isinstance(item, _Record)]
                if records:
                    self._write_with_retry(records)
                for item in batch:
                    if isinstance(item, _Flush):
                        item.done.set()
                if any(item is None for item in batch):
                    return
        finally:
            connection.close()

    def _sweep(self) -> None:
        try:
            close_old_connections()
            ended = fail_abandoned_sync_rows(after_timeout_s=ABANDONED_AFTER_TIMEOUT_S)
        except Exception as exc:  # the database is away: the next sweep tries again
            logger.warning("ledger: sweeping abandoned sync rows failed (%s)", _describe(exc))
            connection.close()
            return
        if ended:
            logger.warning("ledger: %d sync task(s) left running by a server process that died are now failed",
                           ended)

    def _write_with_retry(self, records: list[_Record]) -> None:
        pending: list[list[_Record]] = [records]
        failures = 0
        first_failure_at = 0.0
        while pending:
            chunk = pending[0]
            try:
                close_old_connections()
                written = write_records(chunk)
            except ROW_ERRORS as exc:
                pending.pop(0)
                tasks = _by_task(chunk)
                if len(tasks) > 1:
                    logger.warning("ledger batch of %d records refused (%s); writing it task by task",
                                   len(chunk), _describe(exc))
                    pending[:0] = tasks
                else:
                    logger.error("ledger dropped the records of task %s: the database refused them (%s)",
                                 chunk[0].task_id, _describe(exc))
                continue
            except Exception as exc:
                failures += 1
                if failures == 1:
                    first_failure_at = time.monotonic()
                    logger.exception("ledger write of %d records failed; retrying for up to %.0f s",
                                     len(chunk), WRITE_GIVE_UP_S)
                else:
                    logger.warning("ledger write of %d records failed again (attempt %d): %s",
                                   len(chunk), failures, _describe(exc))
                connection.close()
                if time.monotonic() - first_failure_at >= WRITE_GIVE_UP_S:
                    lost = [record.task_id for part in pending for record in part]
                    logger.error("ledger gave up on %d records: %r", len(lost), lost)
                    return
                time.sleep(min(2.0, 0.1 * 2**failures))
                continue
            pending.pop(0)
            failures = 0
            for hook in self.on_written:
                try:
                    hook(written)
                except Exception:
                    logger.exception("ledger hook %r failed", hook)


def fail_abandoned_sync_rows(*, after_timeout_s: float) -> int:
    """End as `failed` the sync rows still `running` `after_timeout_s` past their timeout; how many."""
    now = timezone.now()
    candidates = Task.objects.filter(execution_mode="sync", status=TaskStatus.RUNNING,
                                     started_at__lt=now - timedelta(seconds=after_timeout_s))
    ids = [task_id for task_id, started_at, timeout_ms in candidates.values_list("id", "started_at", "timeout_ms")
           if started_at is not None
           and started_at + timedelta(milliseconds=timeout_ms or 0, seconds=after_timeout_s) < now]
    if not ids:
        return 0
    return Task.objects.filter(id__in=ids, status=TaskStatus.RUNNING).update(
        status=TaskStatus.FAILED, completed_at=now, error_type="ServerDied",
        error="the server process running this sync task stopped (killed?) before it recorded the outcome",
    )


def _by_task(records: list[_Record]) -> list[list[_Record]]:
    """The records grouped by task, in order (a task's start, progress and finish stay together)."""
    groups: dict[str, list[_Record]] = {}
    for record in records:
        groups.setdefault(record.task_id, []).append(record)
    return list(groups.values())


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def write_records(records: Iterable[_Record]) -> list[dict[str, Any]]:
    """Write one batch in one transaction. Returns the rows' new states (for event publishing)."""
    starts: dict[str, dict[str, Any]] = {}
    finishes: dict[str, dict[str, Any]] = {}
    progress: dict[str, dict[str, Any]] = {}
    queued: list[str] = []
    now = timezone.now()
    chunks: list[TaskLogChunk] = []
    for record in records:
        if record.kind == "log":
            chunks.append(TaskLogChunk.from_read(task_id=record.task_id, written_at=now, **record.fields))
            continue
        fields = storable_fields(record.fields)  # NUL and lone surrogates escaped: no row fails for them
        if record.kind == "start":
            starts[record.task_id] = fields
        elif record.kind == "finish":
            finishes.setdefault(record.task_id, {}).update(fields)
        elif record.kind == "queued":
            queued.append(record.task_id)
        else:
            progress[record.task_id] = fields
    inserts: list[Task] = []
    changed: list[dict[str, Any]] = []
    for task_id, row in starts.items():
        row.update(progress.pop(task_id, {}))
        row.update(finishes.pop(task_id, {}))
        inserts.append(Task(id=task_id, **row))
        changed.append({"task_id": task_id, **row})
    with transaction.atomic():
        if queued:
            Task.objects.filter(id__in=queued, status=TaskStatus.PENDING).update(
                status=TaskStatus.QUEUED, queued_at=timezone.now()
            )
            changed.extend({"task_id": task_id, "status": TaskStatus.QUEUED} for task_id in queued)
        if inserts:
            Task.objects.bulk_create(inserts, ignore_conflicts=True)
        for task_id, fields in finishes.items():
            fields = {**progress.pop(task_id, {}), **fields}
            # Conditional: a cancel that already finished the row wins over a late result.
            updated = Task.objects.filter(id=task_id, status=TaskStatus.RUNNING).update(**fields)
            if updated:
                changed.append({"task_id": task_id, **fields})
        for task_id, fields in progress.items():
            if Task.objects.filter(id=task_id, status=TaskStatus.RUNNING).update(**fields):
                # Progress is a change too: live views redraw the task's progress bar.
                changed.append({"task_id": task_id, "status": TaskStatus.RUNNING, **fields})
        if chunks:  # after the rows they belong to
            TaskLogChunk.objects.bulk_create(chunks, ignore_conflicts=True)
            grown = {(chunk.task_id, chunk.attempt) for chunk in chunks}
            changed.extend({"task_id": task_id, "log_attempt": attempt} for task_id, attempt in sorted(grown))
    return changed
