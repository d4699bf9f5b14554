"""A worker's claim of a task row: what it returns to run, on databases with and without UPDATE ... RETURNING."""

from __future__ import annotations

import pytest
from django.db import connection
from django.utils import timezone

from tasks_app.adapters.events import PublishedTaskEvents
from tasks_app.models import Task
from tasks_app.services.tasks import task_mark_running
from workers.engine.broker.publisher import Publisher

pytestmark = pytest.mark.django_db

# No NATS here: the events of the claims go nowhere, as they do in a process without NEUTRINO_NATS_URL.
EVENTS = PublishedTaskEvents(Publisher(None, timeout_s=1.0), None)


@pytest.mark.parametrize("returning", [True, False], ids=["update-returning", "read-after-update"])
def test_a_claim_runs_what_the_row_says_once_per_attempt(monkeypatch, returning: bool) -> None:
    # SQLite before 3.35 has no RETURNING: the claim then reads the row after its UPDATE.
    monkeypatch.setattr(connection.features, "can_return_columns_from_insert", returning)
    row = Task.objects.create(function_name="wk_add", status="queued", pool="async", execution_mode="async",
                              created_at=timezone.now(), timeout_ms=7_000, max_retries=2,
                              args={"a": 1, "b": {"nested": [1, "two"]}})

    claimed = task_mark_running(events=EVENTS, task_id=str(row.id), pool="async", attempt=1, worker_id="h:1")

    assert claimed is not None
    assert (claimed.function, claimed.args, claimed.timeout_ms, claimed.max_retries) == (
        "wk_add", {"a": 1, "b": {"nested": [1, "two"]}}, 7_000, 2)
    row.refresh_from_db()
    assert (row.status, row.attempt, row.worker_id) == ("running", 1, "h:1")
    again = task_mark_running(events=EVENTS, task_id=str(row.id), pool="async", attempt=1, worker_id="h:2")
    assert again is None, "a second delivery of the same attempt does not claim it again"
    other_pool = task_mark_running(events=EVENTS, task_id=str(row.id), pool="gpu", attempt=2, worker_id="h:3")
    assert other_pool is None, "a worker of another pool never claims it"
    row.refresh_from_db()
    assert (row.attempt, row.worker_id) == (1, "h:1")
