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
