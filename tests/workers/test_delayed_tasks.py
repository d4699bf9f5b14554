"""Delayed tasks and expiry with real processes: `neutrino scheduler` and pool workers as subprocesses, a real
nats-server, the API in this process. Each task records its runs in a file outside the database, so the
counts read what really ran.

Every wait is bounded and polls the database; no test asserts on wall time (only on the order of the
row's own timestamps: a delayed task never starts before its run_at).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import pytest
from django.utils import timezone

from tasks_app.models import Task, TaskAttempt
from tests.servers import wait_for
from tests.workers.test_lost_messages import purge_stream
from tests.workers.test_nats_worker import consumer_backlog, ensure_topology, lines, wait_status

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


@pytest.fixture
def empty_stream(live_nats, default_pools) -> Iterator[str]:
    """The stream exists and holds nothing of another test, before and after this one."""
    ensure_topology(live_nats.url)
    purge_stream(live_nats.url)
    yield live_nats.url
    purge_stream(live_nats.url)


def post(client, task: str, body: dict) -> dict:
    response = client.post(f"/api/{task}", json.dumps(body), content_type="application/json")
    assert response.status_code == 202, response.content
    return response.json()


def wait_all_finished(ids: list[str], timeout_s: float = 90.0) -> list[Task]:
    def finished() -> list[Task] | None:
        rows = list(Task.objects.filter(id__in=ids))
        return rows if all(row.status in ("completed", "failed", "cancelled", "expired") for row in rows) else None

    try:
        return wait_for(finished, timeout_s=timeout_s, what=f"{len(ids)} tasks to finish")
    except AssertionError as exc:
        left = Counter(Task.objects.filter(id__in=ids).values_list("status", flat=True))
        raise AssertionError(f"{exc}; statuses: {dict(left)}") from None


def test_delayed_tasks_run_once_after_run_at_whatever_happens_to_the_scheduler(
        client, empty_stream, start_worker, start_scheduler, tmp_path) -> None:
    start_worker("async", concurrency=4)
    first = start_scheduler()
    runs = tmp_path / "runs.log"
    ids = {}
    for index in range(40):
        # Spread over the next few seconds, so releases happen before, during and after the kills below.
        body = post(client, "wk_append", {"args": {"log_path": str(runs), "tag": f"t{index}"},
                                          "delay_s": 0.5 + (index % 20) * 0.25})
        assert body["status"] == "scheduled"
        ids[body["task_id"]] = f"t{index}"
    # A scheduler that died between its UPDATE and its publish leaves rows pending: the workers' sweeper
    # (NEUTRINO_SWEEP_AFTER_S=1 in these workers) publishes them once their run_at is older than that.
    orphans = list(ids)[:3]
    Task.objects.filter(id__in=orphans).update(status="pending", run_at=timezone.now())

    wait_for(lambda: Task.objects.filter(id__in=list(ids), status="completed").exists(), timeout_s=30,
             what="the first delayed task to complete")
    first.kill()  # SIGKILL, wherever it is in its round
    second = start_scheduler()
    third = start_scheduler()  # two at once: each row is released by one of them
    wait_for(lambda: Task.objects.filter(id__in=list(ids), status="completed").count() >= 20, timeout_s=60,
             what="half of the delayed tasks to complete")
    second.kill()

    rows = wait_all_finished(list(ids))
    assert Counter(row.status for row in rows) == {"completed": len(ids)}
    assert Counter(lines(runs)) == Counter(ids.values()), "each task ran exactly once"
    for row in rows:
        assert row.run_at is not None and row.started_at is not None and row.queued_at is not None
        assert row.queued_at >= row.run_at and row.started_at >= row.run_at, (row.id, row.run_at, row.started_at)
        assert row.attempt == 1, "one delivery each: nothing released twice"
    third.stop()
    assert third.process.returncode == 0
    assert "release_delayed" in first.log() + second.log() + third.log()
    wait_for(lambda: consumer_backlog(empty_stream) == 0, timeout_s=10, what="the stream to be empty")


def test_a_short_expiry_queued_behind_a_long_task_expires_at_the_claim_and_never_runs(
        client, empty_stream, start_worker, tmp_path) -> None:
    """No scheduler runs: the worker's claim itself refuses the expired task and ends it."""
    start_worker("async", concurrency=1)
    long_log, short_log = tmp_path / "long.log", tmp_path / "short.log"
    long_id = post(client, "wk_log_run", {"args": {"log_path": str(long_log), "seconds": 3}})["task_id"]
    wait_status(long_id, "running")
    short_id = post(client, "wk_append", {"args": {"log_path": str(short_log), "tag": "short"},
                                          "expires_s": 1})["task_id"]

    short = wait_status(short_id, "expired", timeout_s=30)
    assert short.started_at is None and short.completed_at is not None and short.error_type == "Expired"
    assert not short_log.exists(), "an expired task never runs"
    assert wait_status(long_id, "completed").status == "completed"
    wait_for(lambda: consumer_backlog(empty_stream) == 0, timeout_s=10, what="the expired task's message to go")
    assert not short_log.exists()


def test_expiry_ends_tasks_waiting_behind_a_delay_a_queue_and_a_retry_backoff(
        client, empty_stream, start_worker, start_scheduler, tmp_path) -> None:
    """With the scheduler running, its expiry job ends what waits where no claim comes: a task in its
    retry's backoff, and gpu tasks (no gpu worker runs here), one of them delayed first."""
    start_worker("async", concurrency=2, env={"NEUTRINO_RETRY_BACKOFF_S": "30"})
    start_scheduler()
    retry_log = tmp_path / "retry.log"
    retrying = post(client, "wk_fail_and_log", {"args": {"log_path": str(retry_log)}, "expires_s": 2})["task_id"]
    queued = post(client, "wk_gpu_pid", {"args": {}, "expires_s": 2})["task_id"]
    delayed = post(client, "wk_gpu_pid", {"args": {}, "delay_s": 0.5, "expires_s": 3})
    assert delayed["status"] == "scheduled"

    for task_id in (retrying, queued, delayed["task_id"]):
        row = wait_status(task_id, "expired", timeout_s=30)
        assert row.completed_at is not None and row.error_type == "Expired" and "expires_at" in row.error
    assert lines(retry_log) == ["run"], "it ran once, then expired in its backoff instead of running again"
    assert list(TaskAttempt.objects.filter(task_id=retrying).values_list("outcome", flat=True)) == ["retried"]
    assert Task.objects.get(id=queued).started_at is None
    assert Task.objects.get(id=delayed["task_id"]).started_at is None
