"""The batching ledger writer: nothing dropped under pressure, start and finish coalesced, flushed on close."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.utils import timezone

from tasks_app.adapters.ledger import LedgerWriter
from tasks_app.models import Task

pytestmark = pytest.mark.django_db(transaction=True)


def start_fields() -> dict:
    now = timezone.now()
    return {
        "function_name": "add", "status": "running", "pool": "fast", "execution_mode": "sync",
        "created_at": now, "started_at": now, "attempt": 1, "timeout_ms": 1000, "args": {},
    }


def test_a_full_queue_slows_callers_and_drops_nothing() -> None:
    writer = LedgerWriter(queue_size=2)
    ids = [str(uuid.uuid4()) for _ in range(300)]

    def produce(chunk: list[str]) -> None:
        for task_id in chunk:
            writer.record_start(task_id, **start_fields())
            writer.record_finish(task_id, status="completed", completed_at=timezone.now(), result=1)

    threads = [threading.Thread(target=produce, args=(ids[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    writer.close()
    assert Task.objects.filter(id__in=ids, status="completed").count() == 300


def test_finish_after_a_separate_start_updates_the_row() -> None:
    writer = LedgerWriter(queue_size=100)
    task_id = str(uuid.uuid4())
    writer.record_start(task_id, **start_fields())
    assert writer.flush()
    assert Task.objects.get(id=task_id).status == "running"
    writer.record_progress(task_id, 0.5, "half")
    writer.record_finish(task_id, status="failed", completed_at=timezone.now(), error="nope")
    writer.close()
    row = Task.objects.get(id=task_id)
    assert (row.status, row.error, row.progress) == ("failed", "nope", 0.5)


def test_a_late_finish_never_overwrites_a_cancelled_row() -> None:
    writer = LedgerWriter(queue_size=100)
    task_id = str(uuid.uuid4())
    writer.record_start(task_id, **start_fields())
    assert writer.flush()
    Task.objects.filter(id=task_id).update(status="cancelled")
    writer.record_finish(task_id, status="completed", completed_at=timezone.now(), result=1)
    writer.close()
    assert Task.objects.get(id=task_id).status == "cancelled"


def test_close_writes_what_is_buffered() -> None:
    writer = LedgerWriter(queue_size=1000)
    ids = [str(uuid.uuid4()) for _ in range(50)]
    for task_id in ids:
        writer.record_start(task_id, **start_fields())
    writer.close()
    assert Task.objects.filter(id__in=ids).count() == 50


def test_disabled_writer_writes_nothing_and_never_blocks() -> None:
    writer = LedgerWriter(queue_size=1, enabled=False)
    for _ in range(10):
        writer.record_start(str(uuid.uuid4()), **start_fields())
    assert writer.flush()
    writer.close()
    assert Task.objects.count() == 0


def test_a_batch_the_database_refuses_is_written_task_by_task_and_only_the_bad_row_is_lost(
        monkeypatch, caplog) -> None:
    from tasks_app.adapters import ledger as ledger_module

    monkeypatch.setattr(ledger_module, "BATCH_LINGER_S", 3.0)  # every record below in one batch
    writer = LedgerWriter(queue_size=100)
    batches: list[set[str]] = []
    writer.on_written.append(lambda rows: batches.append({row["task_id"] for row in rows}))
    good = [str(uuid.uuid4()) for _ in range(4)]
    nul, bad = str(uuid.uuid4()), str(uuid.uuid4())
    writer.record_start(good[0], **start_fields())
    writer.record_start(bad, **{**start_fields(), "attempt": "not a number"})  # no database takes this row
    writer.record_start(nul, **start_fields())
    writer.record_progress(nul, 0.5, "half\x00way")
    writer.record_finish(nul, status="failed", completed_at=timezone.now(), error="bad\x00byte",
                         traceback="Traceback\x00", result={"k\x00": "v\x00"})
    for task_id in good[1:]:
        writer.record_start(task_id, **start_fields())
        writer.record_finish(task_id, status="completed", completed_at=timezone.now(), result="ok")
    with caplog.at_level("WARNING", logger="neutrino.ledger"):
        writer.close()
    assert set(Task.objects.values_list("id", flat=True).filter(id__in=[*good, nul, bad])) == {
        uuid.UUID(t) for t in [*good, nul]}
    assert sorted(len(b) for b in batches) == [1] * 5, "the batch was refused, then its tasks written one by one"
    row = Task.objects.get(id=nul)
    assert (row.error, row.traceback, row.result, row.progress_message) == (
        "bad\\u0000byte", "Traceback\\u0000", {"k\\u0000": "v\\u0000"}, "half\\u0000way")
    assert f"ledger dropped the records of task {bad}" in caplog.text
    assert "gave up" not in caplog.text


def test_the_writer_fails_sync_rows_a_killed_server_left_running_and_nothing_else() -> None:
    """A server process killed between a sync call's start and finish records leaves its row `running`;
    the next writer to start ends it once the task's timeout is long past (no child can still run it)."""
    from datetime import timedelta

    from tasks_app.adapters.ledger import ABANDONED_AFTER_TIMEOUT_S

    long_ago = timezone.now() - timedelta(seconds=ABANDONED_AFTER_TIMEOUT_S + 5)
    abandoned = Task.objects.create(**{**start_fields(), "created_at": long_ago, "started_at": long_ago})
    just_started = Task.objects.create(**start_fields())
    slow_timeout = Task.objects.create(**{**start_fields(), "created_at": long_ago, "started_at": long_ago,
                                          "timeout_ms": 3_600_000})
    queued_running = Task.objects.create(**{**start_fields(), "execution_mode": "async", "pool": "async",
                                            "created_at": long_ago, "started_at": long_ago})
    writer = LedgerWriter(queue_size=10)
    task_id = str(uuid.uuid4())
    writer.record_start(task_id, **start_fields())
    assert writer.flush(timeout_s=10)
    writer.close()

    abandoned.refresh_from_db()
    assert (abandoned.status, abandoned.error_type) == ("failed", "ServerDied")
    assert "stopped" in abandoned.error and abandoned.completed_at is not None
    assert {t.status for t in Task.objects.filter(id__in=[just_started.id, slow_timeout.id, queued_running.id])} \
        == {"running"}
    assert Task.objects.get(id=task_id).status == "running"
