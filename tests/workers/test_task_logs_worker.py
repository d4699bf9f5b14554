"""Task logs of queued tasks: a real pool worker process runs them (async and gpu pools), stores what they
write while they run, keeps what a task killed by its timeout wrote, and keeps each attempt apart."""

from __future__ import annotations

from typing import Any

import pytest

from tasks_app.models import Task, TaskLogChunk
from tests.servers import wait_for
from tests.workers.test_nats_worker import submit, wait_status

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


def log_of(client: Any, task_id: str, attempt: int | None = None) -> list[dict[str, Any]]:
    import json

    response = client.get(f"/tasks/{task_id}/logs", {} if attempt is None else {"attempt": attempt})
    assert response.status_code == 200, response.content
    return [json.loads(line) for line in response.content.decode().splitlines()]


def texts(client: Any, task_id: str, attempt: int | None = None) -> list[str]:
    return [item["text"] for item in log_of(client, task_id, attempt)]


@pytest.mark.parametrize("pool", ["async", "gpu"])
def test_everything_a_queued_task_writes_is_in_its_log(client, default_pools, live_nats, start_worker, pool) -> None:
    start_worker(pool, concurrency=1)
    task_id = submit(client, f"log_everything_{pool}", tag=pool)
    wait_status(task_id, "completed", timeout_s=60)
    items = {item["text"].split("\n")[0]: item for item in log_of(client, task_id)}
    assert (items[f"{pool} printed"]["stream"], items[f"{pool} printed"]["level"]) == ("stdout", "INFO")
    assert items[f"{pool} to stderr"]["stream"] == "stderr"
    assert items[f"log_tests: {pool} logged with a traceback"]["level"] == "ERROR"
    assert "ValueError: boom" in items[f"log_tests: {pool} logged with a traceback"]["text"]
    assert items[f"{pool} via neutrino.log step=3"]["stream"] == "neutrino"
    assert items[f"{pool} from a subprocess"]["stream"] == "raw"
    assert f"{pool} without a newline" in items


def test_a_timeout_kill_keeps_the_lines_before_it(client, default_pools, live_nats, start_worker) -> None:
    start_worker("async", concurrency=1)
    task_id = submit(client, "log_then_hang_async", tag="stuck")
    row = wait_status(task_id, "failed", timeout_s=30)
    assert row.error_type == "TimeoutError", row.error
    assert texts(client, task_id) == ["stuck line 0", "stuck line 1", "stuck line 2",
                                      "log_tests: stuck about to hang"]


def test_each_attempt_has_its_own_log(client, default_pools, live_nats, start_worker, tmp_path) -> None:
    start_worker("async", concurrency=1)
    task_id = submit(client, "log_fail_once", marker=str(tmp_path / "marker"))
    row = wait_status(task_id, "completed", timeout_s=30)
    assert row.attempt == 2
    assert texts(client, task_id, 1) == ["attempt one"]
    assert texts(client, task_id) == ["attempt two"]  # the latest attempt by default
    assert client.get(f"/tasks/{task_id}/logs").headers["X-Neutrino-Log-Attempts"] == "1,2"


def test_the_log_is_stored_while_the_task_runs_and_the_cap_holds(client, default_pools, live_nats, start_worker,
                                                                 settings) -> None:
    start_worker("async", concurrency=2, env={"NEUTRINO_LOG_MAX_BYTES": "100000"})
    slow = submit(client, "log_slowly_async", first="before the pause", second="after it", pause_s=3.0)
    wait_for(lambda: texts(client, slow) == ["before the pause"], timeout_s=20,
             what="the first line to be stored while the task sleeps")
    assert Task.objects.get(id=slow).status == "running"
    wait_status(slow, "completed", timeout_s=20)
    assert texts(client, slow) == ["before the pause", "after it"]

    flood = submit(client, "log_flood_async", megabytes=0.5)
    wait_status(flood, "completed", timeout_s=30)
    lines = log_of(client, flood)
    assert lines[-1]["stream"] == "neutrino" and "more not kept" in lines[-1]["text"]
    stored = sum(len(text) for text in TaskLogChunk.objects.filter(task_id=flood).values_list("text", flat=True))
    assert stored <= 100_000


def test_the_log_goes_with_its_task(client, default_pools, live_nats, start_worker) -> None:
    start_worker("async", concurrency=1)
    task_id = submit(client, "log_everything_async", tag="gone")
    wait_status(task_id, "completed", timeout_s=30)
    assert TaskLogChunk.objects.filter(task_id=task_id).exists()
    Task.objects.filter(id=task_id).delete()
    assert not TaskLogChunk.objects.filter(task_id=task_id).exists()
