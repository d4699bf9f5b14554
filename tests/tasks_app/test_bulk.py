"""Bulk actions, the services: the count a confirmation shows, and the scheduler's chunked work on a real
database with a real nats-server (cancel messages, retries published to JetStream).

The scheduler as a process (claims, take-over, the job in `neutrino scheduler`) is in test_bulk_scheduler.py.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from tasks_app.core.errors import Conflict, InvalidArguments
from tasks_app.models import AuditRecord, BulkAction, Task, TaskAttempt
from tasks_app.operator_models import BulkActionStatus
from tasks_app.selectors.bulk import filter_from_json, filter_to_json
from tasks_app.selectors.tasks import TaskFilters
from tasks_app.services.audit import Actor
from tasks_app.services.bulk import bulk_create, bulk_stop, bulk_work

pytestmark = pytest.mark.django_db(transaction=True)

OPERATOR = Actor(label="user:ada", ip="10.0.0.7", user_agent="pytest")


def make_rows(n: int, *, status: str = "queued", function: str = "wk_noop", pool: str = "async",
              age_s: float = 60.0, **fields: Any) -> list[uuid.UUID]:
    """`n` task rows, created `age_s` ago and each a microsecond apart (no messages: rows only)."""
    now = timezone.now()
    finished = status in ("completed", "failed", "cancelled", "expired")
    rows = [Task(function_name=function, status=status, pool=pool,
                 execution_mode="sync" if pool == "fast" else "async",
                 created_at=now - timedelta(seconds=age_s, microseconds=i), timeout_ms=10_000, args={"n": i},
                 attempt=1, completed_at=now if finished else None, **fields) for i in range(n)]
    Task.objects.bulk_create(rows, batch_size=500)
    return [row.id for row in rows]


def work_until_finished(ports: Any, *, chunk: int = 500, rounds: int = 1000, **kwargs: Any) -> BulkAction:
    for _ in range(rounds):
        bulk_work(ports=ports, holder="test-holder", chunk=chunk, **kwargs)
        bulk = BulkAction.objects.order_by("-created_at").first()
        assert bulk is not None
        if bulk.finished:
            return bulk
    raise AssertionError(f"bulk action not finished after {rounds} rounds: {bulk.status} {bulk.note}")


@pytest.fixture
def ports(private_nats, default_pools):
    from neutrino_site.process import http_ports

    return http_ports()


def test_the_filter_round_trips_and_bad_keys_are_422_naming_each() -> None:
    after = timezone.now() - timedelta(hours=1)
    filters = TaskFilters(status="failed", function="wk_noop", error_type="ValueError", error_contains="boom",
                          created_after=after)
    assert filter_from_json(filter_to_json(filters)) == filters
    with pytest.raises(InvalidArguments) as bad:
        filter_from_json({"status": "nope", "colour": "red", "created_after": "yesterday", "pool": 3})
    assert {f["field"] for f in bad.value.details["fields"]} == {
        "filter.status", "filter.colour", "filter.created_after", "filter.pool"}


def test_create_counts_exactly_and_refuses_a_confirmed_count_that_changed() -> None:
    make_rows(30, status="queued")
    make_rows(7, status="completed")
    filters = TaskFilters(status="queued")
    with pytest.raises(Conflict) as changed:
        bulk_create(filters=filters, action="cancel", actor=OPERATOR, expected_count=29)
    assert changed.value.details["count"] == 30
    assert not BulkAction.objects.exists() and not AuditRecord.objects.exists()
    bulk = bulk_create(filters=filters, action="cancel", actor=OPERATOR, expected_count=30)
    assert (bulk.total, bulk.status, bulk.created_by) == (30, "queued", "user:ada")
    record = AuditRecord.objects.get()
    assert (record.actor, record.ip, record.user_agent, record.action, record.object_id) == (
        "user:ada", "10.0.0.7", "pytest", "bulk.cancel", str(bulk.id))
    assert record.after == {"action": "cancel", "filter": {"status": "queued"}, "count": 30}
    with pytest.raises(InvalidArguments):
        bulk_create(filters=filters, action="explode", actor=OPERATOR)


def test_cancel_works_in_chunks_and_leaves_finished_and_newer_tasks_alone(ports) -> None:
    queued = make_rows(1_234, status="queued", function="wk_noop")
    done = make_rows(5, status="completed", function="wk_noop", age_s=30)
    other = make_rows(10, status="queued", function="wk_add")
    bulk = bulk_create(filters=TaskFilters(function="wk_noop"), action="cancel", actor=OPERATOR)
    newer = make_rows(3, status="queued", function="wk_noop", age_s=-1)  # made after the action was asked for
    assert bulk.total == 1_239
    bulk = work_until_finished(ports, chunk=100)
    assert (bulk.status, bulk.done, bulk.failed) == ("done", 1_234, 5)
    assert Task.objects.filter(id__in=queued, status="cancelled", cancel_requested=True).count() == 1_234
    assert set(Task.objects.filter(id__in=done).values_list("status", flat=True)) == {"completed"}
    assert set(Task.objects.filter(id__in=other + newer).values_list("status", flat=True)) == {"queued"}
    finish = AuditRecord.objects.get(action="bulk.finish")
    assert finish.actor == "system" and finish.after["done"] == 1_234 and finish.after["status"] == "done"


def test_delete_removes_finished_tasks_only(ports) -> None:
    finished = make_rows(600, status="failed", function="wk_noop", error="boom: disk full", error_type="OSError")
    TaskAttempt.objects.create(task_id=finished[0], attempt=1, ended_at=timezone.now(), outcome="retried")
    active = make_rows(4, status="running", function="wk_noop", error="boom: disk full", error_type="OSError")
    other_error = make_rows(5, status="failed", function="wk_noop", error="timeout", error_type="OSError")
    bulk_create(filters=TaskFilters(error_type="OSError", error_contains="DISK"), action="delete", actor=OPERATOR)
    bulk = work_until_finished(ports, chunk=250)
    assert (bulk.done, bulk.failed) == (600, 4)
    assert not Task.objects.filter(id__in=finished).exists()
    assert not TaskAttempt.objects.exists()
    assert Task.objects.filter(id__in=active + other_error).count() == 9


def test_retry_makes_one_new_task_per_finished_task_even_when_a_chunk_runs_twice(ports, private_nats) -> None:
    failed = make_rows(40, status="failed", function="wk_noop")
    make_rows(2, status="queued", function="wk_noop")
    bulk = bulk_create(filters=TaskFilters(function="wk_noop"), action="retry", actor=OPERATOR)
    bulk = work_until_finished(ports, chunk=15)
    assert (bulk.done, bulk.failed) == (40, 2)
    retries = Task.objects.filter(retry_of_id__in=failed)
    assert retries.count() == 40
    assert {r.args["n"] for r in retries} == set(range(40))
    # Another scheduler takes over from the top (its predecessor died before recording a chunk).
    BulkAction.objects.filter(id=bulk.id).update(status="running", cursor_created_at=None, cursor_id=None,
                                                 done=0, failed=0, claimed_by="dead", lease_until=timezone.now())
    bulk = work_until_finished(ports, chunk=15)
    assert Task.objects.filter(retry_of_id__in=failed).count() == 40, "no task is retried twice"
    assert private_nats.stream_messages() == 40


def test_retry_waits_for_room_in_a_full_pool(ports, default_pools) -> None:
    from pools_app.selectors import forget_cached_pools

    default_pools["async"].max_backlog = 10
    default_pools["async"].save()
    forget_cached_pools()
    failed = make_rows(25, status="failed", function="wk_noop")
    bulk_create(filters=TaskFilters(status="failed"), action="retry", actor=OPERATOR)
    for _ in range(3):
        bulk_work(ports=ports, holder="test-holder", chunk=100)
    bulk = BulkAction.objects.get()
    assert (bulk.status, bulk.done) == ("running", 10)
    assert "pool async is full" in bulk.note
    for _ in range(100):
        Task.objects.filter(retry_of_id__in=failed).update(status="completed")  # the workers drained them
        bulk_work(ports=ports, holder="test-holder", chunk=100)
        bulk = BulkAction.objects.get()
        if bulk.finished:
            break
    assert (bulk.status, bulk.done) == ("done", 25)
    assert Task.objects.filter(retry_of_id__in=failed).count() == 25


def test_stop_ends_a_running_action_between_chunks_and_a_queued_one_at_once(ports) -> None:
    make_rows(300, status="queued")
    bulk = bulk_create(filters=TaskFilters(status="queued"), action="cancel", actor=OPERATOR)
    bulk_work(ports=ports, holder="test-holder", chunk=100, round_s=0)  # one chunk, then the round ends
    assert BulkAction.objects.get().done == 100
    stopped = bulk_stop(bulk_id=bulk.id, actor=OPERATOR)
    assert stopped.stop_requested and stopped.status == "running"
    bulk_work(ports=ports, holder="test-holder", chunk=100)
    bulk = BulkAction.objects.get()
    assert (bulk.status, bulk.done) == (BulkActionStatus.STOPPED, 100)
    assert Task.objects.filter(status="queued").count() == 200
    queued = bulk_create(filters=TaskFilters(status="queued"), action="cancel", actor=OPERATOR)
    assert bulk_stop(bulk_id=queued.id, actor=OPERATOR).status == "stopped"
    assert bulk_work(ports=ports, holder="test-holder") == 0
    assert Task.objects.filter(status="queued").count() == 200
    assert AuditRecord.objects.filter(action="bulk.stop").count() == 2


def test_a_second_scheduler_does_not_take_a_claimed_action_until_its_lease_runs_out(ports) -> None:
    make_rows(50, status="queued")
    bulk_create(filters=TaskFilters(), action="cancel", actor=OPERATOR)
    bulk_work(ports=ports, holder="first", chunk=10, round_s=0)
    assert bulk_work(ports=ports, holder="second", chunk=10) == 0
    BulkAction.objects.update(lease_until=timezone.now() - timedelta(seconds=1))  # the first one died
    assert bulk_work(ports=ports, holder="second", chunk=10) == 40
    bulk = BulkAction.objects.get()
    assert (bulk.status, bulk.claimed_by, bulk.done) == ("done", "second", 50)
