"""The NATS worker end to end: the HTTP API in this process, a real nats-server, real worker processes
(`neutrino serve --mode nats`) writing to this test's database. No mocks.

Every wait is bounded and polls the database; no test asserts on wall time.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import nats
import pytest
from django.utils import timezone
from nats.aio.client import Client
from nats.js import JetStreamContext

from neutrino_site.process import http_ports
from pools_app.models import Worker
from tasks_app.models import Task, TaskAttempt
from tests.servers import pid_alive, wait_for
from workers.engine.nats_server import NatsServer
from workers.engine.topology import (
    CANCEL_SUBJECT,
    EVENTS_SUBJECT,
    STREAM,
    consumer_name,
    encode_task_message,
    ensure_stream,
    pool_depth,
    task_subject,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

T = TypeVar("T")


# --- helpers ---------------------------------------------------------------------------------------




def nats_call(url: str, fn: Callable[[Client, JetStreamContext], Awaitable[T]]) -> T:
    """Run `fn(nc, js)` on a fresh connection of this test."""

    async def main() -> T:
        nc = await nats.connect(url)
        try:
            return await fn(nc, nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(main())


def ensure_topology(url: str, pools: tuple[str, ...] = ("async", "gpu")) -> None:
    """Create the stream before any worker runs (workers create it too), so a submit is accepted."""

    async def ensure(nc: Client, js: JetStreamContext) -> None:
        await ensure_stream(js, list(pools))

    nats_call(url, ensure)


def consumer_backlog(url: str, pool: str = "async") -> int:
    async def depth(nc: Client, js: JetStreamContext) -> int:
        d = await pool_depth(js, pool)
        return d.pending + d.in_flight

    return nats_call(url, depth)


def submit(client: Any, task: str, **args: Any) -> str:
    response = client.post(f"/api/{task}", {"args": args}, content_type="application/json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued", body
    return str(body["task_id"])


def task_row(task_id: str) -> Task:
    return Task.objects.get(id=task_id)


def wait_status(task_id: str, *statuses: str, timeout_s: float = 20.0) -> Task:
    def reached() -> Task | None:
        row = task_row(task_id)
        return row if row.status in statuses else None

    try:
        return wait_for(reached, timeout_s=timeout_s, what=f"task {task_id} to be {'/'.join(statuses)}")
    except AssertionError as exc:
        row = task_row(task_id)
        raise AssertionError(f"{exc}; it is {row.status} (attempt {row.attempt}, error {row.error!r})") from None


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def pools(default_pools):
    return default_pools


# --- the paths -------------------------------------------------------------------------------------


def test_happy_path_end_to_end(client, pools, live_nats, start_worker):
    worker = start_worker("async", concurrency=2)
    seen: list[dict[str, Any]] = []
    bridge = http_ports().broker
    assert bridge is not None
    bridge.subscribe(EVENTS_SUBJECT, seen.append)

    task_id = submit(client, "wk_add", a=2, b=3)

    row = wait_status(task_id, "completed")
    assert row.result == 5
    assert row.attempt == 1
    assert row.worker_id == worker.worker_id
    assert row.started_at is not None and row.completed_at is not None
    assert row.error == ""
    # "queued" comes from the gateway's ledger batch, so it may arrive after "running" or "completed".
    statuses = wait_for(
        lambda: {"queued", "running", "completed"} <= {e["status"] for e in seen if e.get("task_id") == task_id},
        what="the task's queued, running and completed events",
    )
    assert statuses
    beat = wait_for(lambda: Worker.objects.filter(worker_id=worker.worker_id).first(), what="a heartbeat")
    assert beat.pool == "async" and beat.concurrency == 2 and beat.pid == worker.pid
    assert beat.stopped_at is None


def test_retries_with_backoff_until_success(client, pools, live_nats, start_worker, tmp_path):
    start_worker("async")
    counter = tmp_path / "counter"

    task_id = submit(client, "wk_flaky", counter_path=str(counter), fail_times=2)

    row = wait_status(task_id, "completed")
    assert row.attempt == 3
    assert row.result == {"runs": 3}
    assert counter.read_text() == "3"
    assert row.error == "" and row.traceback == ""
    past = list(TaskAttempt.objects.filter(task_id=task_id).order_by("attempt"))
    assert [(a.attempt, a.outcome) for a in past] == [(1, "retried"), (2, "retried")]
    assert all(a.worker_id and a.started_at and "raised" in a.error for a in past)


def test_exhausted_retries_fail_with_error_and_traceback(client, pools, live_nats, start_worker):
    start_worker("async")

    task_id = submit(client, "wk_always_fails", message="nope, not today")

    row = wait_status(task_id, "failed")
    assert row.attempt == 2  # max_retries=1: the first run and one retry
    assert row.error_type == "ValueError"
    assert "nope, not today" in row.error
    assert "ValueError" in row.traceback and "wk_always_fails" in row.traceback
    assert row.completed_at is not None


def test_timeout_fails_the_task(client, pools, live_nats, start_worker):
    start_worker("async")

    task_id = submit(client, "wk_too_slow", seconds=30)

    row = wait_status(task_id, "failed")
    assert row.error_type == "TimeoutError"
    assert "timed out after 500 ms" in row.error
    assert row.attempt == 1


def test_crash_and_bad_result_fail_the_task(client, pools, live_nats, start_worker):
    start_worker("async")

    crashed = submit(client, "wk_crash", code=7)
    not_json = submit(client, "wk_not_json")

    row = wait_status(crashed, "failed")
    assert row.error_type == "WorkerCrashed" and "exited with code 7" in row.error
    row = wait_status(not_json, "failed")
    assert row.error_type == "ResultError"
    assert wait_status(submit(client, "wk_add", a=1, b=1), "completed").result == 2  # the pool healed


def test_deliveries_exhausted_when_failures_reach_max_deliver(client, pools, live_nats, start_worker, tmp_path):
    # max_retries=3 would allow four runs, but the consumer delivers a message at most twice.
    start_worker("async", env={"NEUTRINO_MAX_DELIVER": "2"})
    counter = tmp_path / "counter"

    task_id = submit(client, "wk_flaky", counter_path=str(counter), fail_times=10)

    row = wait_status(task_id, "failed")
    assert row.attempt == 2
    assert "deliveries exhausted" in row.error
    assert "flaky failure 2 of 10" in row.error
    assert counter.read_text() == "2"
    wait_for(lambda: consumer_backlog(live_nats.url) == 0, what="the consumer to be empty")


def test_progress_is_recorded_while_running(client, pools, live_nats, start_worker):
    start_worker("async")

    task_id = submit(client, "wk_progress", steps=4, step_s=0.4)

    def running_with_progress() -> Task | None:
        row = task_row(task_id)
        return row if row.status == "running" and row.progress is not None else None

    row = wait_for(running_with_progress, what="a progress report while it runs")
    assert 0 < row.progress <= 1
    assert row.progress_message.startswith("step ")
    assert wait_status(task_id, "completed").result == 4


def test_sweeper_republishes_pending_rows(client, pools, live_nats, start_worker):
    """A row the broker never confirmed (left pending) is published again by the worker's sweeper."""
    start_worker("async")
    row = Task.objects.create(function_name="wk_add", status="pending", pool="async", execution_mode="async",
                              created_at=timezone.now() - timedelta(seconds=5), timeout_ms=10_000,
                              args={"a": 4, "b": 5})

    done = wait_status(str(row.id), "completed")
    assert done.result == 9 and done.attempt == 1


# --- cancel ----------------------------------------------------------------------------------------


def test_cancel_queued_task_never_runs(client, pools, live_nats, start_worker, tmp_path):
    ensure_topology(live_nats.url)
    marker = tmp_path / "ran"
    task_id = submit(client, "wk_touch", path=str(marker))

    response = client.delete(f"/tasks/{task_id}")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "cancelled"

    start_worker("async")
    # The worker takes the message, sees the row is cancelled and drops it without running it.
    wait_for(lambda: consumer_backlog(live_nats.url) == 0, what="the queued message to be consumed")
    probe = submit(client, "wk_add", a=1, b=1)  # the worker works, and got past the cancelled one
    wait_status(probe, "completed")
    assert not marker.exists()
    row = task_row(task_id)
    assert row.status == "cancelled" and row.started_at is None and row.attempt == 0


def test_cancel_running_task_kills_its_process(client, pools, live_nats, start_worker, tmp_path):
    start_worker("async")
    pid_file = tmp_path / "pid"
    task_id = submit(client, "wk_pid_sleep", pid_path=str(pid_file), seconds=60)
    wait_status(task_id, "running")
    pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), what="the task's pid"))
    assert pid_alive(pid)

    response = client.delete(f"/tasks/{task_id}")
    assert response.status_code == 200, response.content

    assert task_row(task_id).status == "cancelled"
    wait_for(lambda: not pid_alive(pid), timeout_s=10, what=f"the task's process {pid} to be killed")
    wait_for(lambda: consumer_backlog(live_nats.url) == 0, what="the message to be terminated")
    row = task_row(task_id)
    assert row.status == "cancelled" and row.error_type == "Cancelled"


# --- worker failures -------------------------------------------------------------------------------


def test_a_task_longer_than_the_ack_wait_runs_once(client, pools, live_nats, start_worker, tmp_path):
    """The worker keeps the delivery in progress: two workers, and the broker never hands it to the other."""
    first = start_worker("async", concurrency=1)
    start_worker("async", concurrency=1)
    runs = tmp_path / "runs"
    task_id = submit(client, "wk_log_run", log_path=str(runs), seconds=3 * first.ack_wait_s)

    row = wait_status(task_id, "completed", timeout_s=30)
    assert row.attempt == 1
    assert len(lines(runs)) == 1, "one run, though it outlasted the ack wait three times"
    wait_for(lambda: consumer_backlog(live_nats.url) == 0, what="the delivery to be acked")


def test_killed_worker_task_finishes_on_another_worker(client, pools, live_nats, start_worker, tmp_path):
    first = start_worker("async", concurrency=1)
    second = start_worker("async", concurrency=1)
    runs = tmp_path / "runs"
    task_id = submit(client, "wk_log_run", log_path=str(runs), seconds=4)
    row = wait_status(task_id, "running")
    wait_for(lambda: len(lines(runs)) == 1, what="the first run to start")
    victim, survivor = (first, second) if row.worker_id == first.worker_id else (second, first)
    assert row.worker_id == victim.worker_id

    victim.kill()  # SIGKILL: no goodbye; its children die with it, its message comes back after ack_wait

    row = wait_status(task_id, "completed", timeout_s=30)
    assert row.attempt == 2
    assert row.worker_id == survivor.worker_id
    assert len(lines(runs)) == 2  # one start per delivery: the killed one and the one that completed
    lost = TaskAttempt.objects.get(task_id=task_id)
    assert (lost.attempt, lost.outcome, lost.worker_id) == (1, "lost", victim.worker_id)
    wait_for(lambda: consumer_backlog(live_nats.url) == 0, what="the completed delivery to be acked")
    # Nothing runs it a third time: a delivery left unacked would come back after the ack wait.
    time.sleep(2 * survivor.ack_wait_s)
    assert len(lines(runs)) == 2
    assert task_row(task_id).status == "completed"


def test_sigterm_lets_running_task_finish(client, pools, live_nats, start_worker, tmp_path):
    worker = start_worker("async", concurrency=1)
    runs = tmp_path / "runs"
    task_id = submit(client, "wk_log_run", log_path=str(runs), seconds=1.0)
    wait_status(task_id, "running")

    worker.terminate()

    assert worker.wait(30) == 0, worker.log()
    row = task_row(task_id)
    assert row.status == "completed" and row.attempt == 1
    assert len(lines(runs)) == 1
    beat = Worker.objects.get(worker_id=worker.worker_id)
    assert beat.stopped_at is not None


def test_sigterm_past_grace_hands_task_to_another_worker(client, pools, live_nats, start_worker, tmp_path):
    leaving = start_worker("async", concurrency=1, env={"NEUTRINO_WORKER_GRACE_S": "0.3"})
    runs = tmp_path / "runs"
    task_id = submit(client, "wk_log_run", log_path=str(runs), seconds=3.0)
    wait_status(task_id, "running")
    wait_for(lambda: len(lines(runs)) == 1, what="the run to start")

    leaving.terminate()
    assert leaving.wait(30) == 0, leaving.log()
    assert task_row(task_id).status == "queued"  # handed back, not failed

    other = start_worker("async", concurrency=1)
    row = wait_status(task_id, "completed", timeout_s=30)
    assert row.worker_id == other.worker_id
    assert row.attempt == 2
    assert len(lines(runs)) == 2


def test_worker_dying_on_last_delivery_fails_task(client, pools, live_nats, start_worker, tmp_path):
    env = {"NEUTRINO_MAX_DELIVER": "2"}
    runs = tmp_path / "runs"
    first = start_worker("async", concurrency=1, env=env)
    task_id = submit(client, "wk_log_run", log_path=str(runs), seconds=60)
    wait_for(lambda: len(lines(runs)) == 1, what="the first run")
    first.kill()
    second = start_worker("async", concurrency=1, env=env)
    wait_for(lambda: len(lines(runs)) == 2, timeout_s=30, what="the second delivery")
    second.kill()

    start_worker("async", concurrency=1, env=env)  # gets the max-deliveries advisory
    row = wait_status(task_id, "failed", timeout_s=30)
    assert row.error_type == "DeliveriesExhausted"
    assert "gave up after 2 deliveries" in row.error
    wait_for(lambda: consumer_backlog(live_nats.url) == 0, what="the consumer to be empty")

    async def stream_has_it(nc: Client, js: JetStreamContext) -> int:
        info = await js.stream_info(STREAM, subjects_filter=task_subject("async", "wk_log_run"))
        return int((info.state.subjects or {}).get(task_subject("async", "wk_log_run"), 0))

    assert nats_call(live_nats.url, stream_has_it) == 0  # deleted, not left in the work queue
    assert len(lines(runs)) == 2


# --- the broker ------------------------------------------------------------------------------------


def test_poison_message_is_terminated(client, pools, live_nats, start_worker):
    start_worker("async")

    async def publish_garbage(nc: Client, js: JetStreamContext) -> None:
        await js.publish(task_subject("async", "noop"), b"\x00\xffnot json at all")
        await js.publish(task_subject("async", "noop"), b'{"task_id": "x"}')  # JSON, but not a task

    nats_call(live_nats.url, publish_garbage)
    probe = submit(client, "wk_add", a=20, b=22)
    assert wait_status(probe, "completed").result == 42
    wait_for(lambda: consumer_backlog(live_nats.url) == 0, what="no message left pending or unacknowledged")


def test_duplicate_publish_is_deduplicated(client, pools, live_nats, start_worker, tmp_path):
    ensure_topology(live_nats.url)
    runs = tmp_path / "runs"
    task_id = submit(client, "wk_log_run", log_path=str(runs), seconds=0)
    subject = task_subject("async", "wk_log_run")
    payload = encode_task_message(task_id=task_id, function="wk_log_run",
                                  args={"log_path": str(runs), "seconds": 0}, max_retries=0, timeout_ms=60_000)

    async def publish_again(nc: Client, js: JetStreamContext) -> tuple[bool, int]:
        ack = await js.publish(subject, payload, headers={"Nats-Msg-Id": task_id})
        info = await js.stream_info(STREAM, subjects_filter=subject)
        return bool(ack.duplicate), int((info.state.subjects or {}).get(subject, 0))

    duplicate, held = nats_call(live_nats.url, publish_again)
    assert duplicate
    assert held == 1

    start_worker("async")
    assert wait_status(task_id, "completed").attempt == 1
    wait_for(lambda: consumer_backlog(live_nats.url) == 0, what="the consumer to be empty")
    assert len(lines(runs)) == 1


def test_nats_restart_mid_run_loses_nothing_and_runs_nothing_twice(client, pools, live_nats, start_worker,
                                                                    tmp_path):
    worker = start_worker("async", concurrency=2)
    runs = tmp_path / "runs"
    tags = [f"call-{n}" for n in range(20)]
    ids = {submit(client, "wk_log_start_and_end", log_path=str(runs), tag=tag, seconds=0.2): tag for tag in tags}
    wait_for(lambda: Task.objects.filter(id__in=ids, status="completed").count() >= 3, what="a few completions")

    live_nats.kill()
    time.sleep(1.0)  # down for a while: heartbeats and acks of the running tasks fail meanwhile
    live_nats.start()

    wait_for(lambda: Task.objects.filter(id__in=ids, status="completed").count() == 20, timeout_s=60,
             what="all 20 tasks to complete")
    assert not Task.objects.filter(id__in=ids).exclude(status="completed").exists()
    assert {row.id: row.result for row in Task.objects.filter(id__in=ids)} == {uuid.UUID(i): t for i, t in ids.items()}
    wait_for(lambda: consumer_backlog(live_nats.url) == 0, timeout_s=20, what="the consumer to be empty")
    # An ack lost with the broker brings its message back after the ack wait: wait past it, twice over.
    time.sleep(2 * worker.ack_wait_s)
    # The tasks' own record, outside the database: the worker never died, so every call started once
    # and ran to its end once, however often the broker delivered it.
    log = [line.split() for line in lines(runs)]
    assert Counter(tag for tag, event in log if event == "end") == Counter(tags)
    assert Counter(tag for tag, event in log if event == "start") == Counter(tags)


def test_worker_recreates_the_stream_of_a_blank_broker(client, pools, live_nats, start_worker, tmp_path):
    """A nats-server that comes back without its store: the worker recreates the stream and its consumer."""
    worker = start_worker("async")
    live_nats.stop()
    blank = NatsServer(store_dir=tmp_path / "blank-store", port=live_nats.port).start()
    try:
        bridge = http_ports().broker
        assert bridge is not None
        wait_for(lambda: bridge.connected, timeout_s=20, what="the bridge to reconnect")
        response = client.post("/api/wk_add", {"args": {"a": 5, "b": 6}}, content_type="application/json")
        # 202 either way: queued once the worker recreated the stream, or pending (the sweeper republishes).
        assert response.status_code == 202, response.content
        row = wait_status(response.json()["task_id"], "completed", timeout_s=30)
        assert row.result == 11 and row.worker_id == worker.worker_id
    finally:
        blank.stop()
        live_nats.start()


def test_broker_down_at_submit(client, pools, live_nats, start_worker):
    ensure_topology(live_nats.url)
    bridge = http_ports().broker
    assert bridge is not None and bridge.connected
    live_nats.stop()
    wait_for(lambda: not bridge.connected, what="the bridge to notice")

    response = client.post("/api/wk_add", {"args": {"a": 1, "b": 2}}, content_type="application/json")

    assert response.status_code == 503, response.content
    body = response.json()
    assert "NATS" in body["message"]
    failed = Task.objects.get(id=body["task_id"])
    assert failed.status == "failed" and failed.error_type == "BrokerUnavailable"
    assert "not queued" in failed.error

    live_nats.start()
    wait_for(lambda: bridge.connected, timeout_s=20, what="the bridge to reconnect")
    start_worker("async")
    task_id = submit(client, "wk_add", a=1, b=2)
    assert wait_status(task_id, "completed").result == 3
    assert not Task.objects.filter(status__in=["pending", "queued", "running"]).exists()
    assert task_row(body["task_id"]).status == "failed"  # the refused one was not run behind our back


# --- setup --------------------------------------------------------------------------------------


def test_worker_waits_for_nats_at_start(pools, live_nats, start_worker, tmp_path):
    late = NatsServer(store_dir=tmp_path / "late-nats")
    worker = start_worker("async", nats_url=late.url, ready=False)
    try:
        wait_for(lambda: "cannot reach NATS" in worker.log(), what="the worker to say NATS is unreachable")
        assert worker.process.poll() is None  # still running, still trying
        late.start()
        worker.wait_ready()
        worker.terminate()
        assert worker.wait(30) == 0
    finally:
        worker.stop()
        late.stop()


def test_gpu_pool_worker_spawns_its_children(client, pools, live_nats, start_worker):
    worker = start_worker("gpu", concurrency=1)
    assert "start method spawn" in worker.log()

    task_id = submit(client, "wk_gpu_pid")

    row = wait_status(task_id, "completed")
    assert row.worker_id == worker.worker_id
    cmdline = Path(f"/proc/{row.result}/cmdline").read_bytes()  # the pooled child is still alive
    assert b"spawn_main" in cmdline  # a fresh interpreter, never a fork of the worker


# --- setup errors ----------------------------------------------------------------------------------


def test_worker_refuses_unknown_or_http_pool(pools, live_nats, start_worker):
    for pool, why in (("nope", "does not exist"), ("fast", "is an http pool")):
        worker = start_worker(pool, ready=False)
        assert worker.wait(60) == 2
        assert why in worker.log()


def test_unknown_function_fails_the_task(pools, live_nats, start_worker):
    start_worker("async")
    task_id = str(uuid.uuid4())
    Task.objects.create(id=task_id, function_name="not_a_task", status="queued", pool="async",
                        execution_mode="async", created_at=timezone.now(),
                        timeout_ms=1000)

    async def publish(nc: Client, js: JetStreamContext) -> None:
        await js.publish(task_subject("async", "not_a_task"),
                         encode_task_message(task_id=task_id, function="not_a_task", args={}, max_retries=3,
                                             timeout_ms=1000),
                         headers={"Nats-Msg-Id": task_id})

    nats_call(live_nats.url, publish)
    row = wait_status(task_id, "failed")
    assert row.error_type == "UnknownTask"
    assert "unknown function not_a_task on pool async" in row.error
    wait_for(lambda: consumer_backlog(live_nats.url) == 0, what="the consumer to be empty")


def test_consumer_settings_follow_the_worker(pools, live_nats, start_worker):
    start_worker("async", env={"NEUTRINO_ACK_WAIT_S": "3", "NEUTRINO_MAX_DELIVER": "4"})

    async def info(nc: Client, js: JetStreamContext) -> tuple[float, int]:
        ci = await js.consumer_info(STREAM, consumer_name("async"))
        return float(ci.config.ack_wait or 0), int(ci.config.max_deliver or 0)

    assert nats_call(live_nats.url, info) == (3.0, 4)



# --- forged messages ---------------------------------------------------------------------------------


def test_forged_message_runs_the_rows_function_and_args(client, pools, live_nats, start_worker, tmp_path):
    """The worker runs what the task's row says, never what a message says."""
    ensure_topology(live_nats.url)
    forged_marker = tmp_path / "forged"
    task_id = str(uuid.uuid4())
    Task.objects.create(id=task_id, function_name="wk_add", args={"a": 2, "b": 3}, status="queued", pool="async",
                        execution_mode="async", created_at=timezone.now(), timeout_ms=10_000)

    async def publish(nc: Client, js: JetStreamContext) -> None:
        await js.publish(task_subject("async", "wk_touch"),
                         encode_task_message(task_id=task_id, function="wk_touch", args={"path": str(forged_marker)},
                                             max_retries=0, timeout_ms=60_000))

    nats_call(live_nats.url, publish)
    start_worker("async")
    row = wait_status(task_id, "completed", "failed")
    assert row.status == "completed" and row.result == 5, (row.status, row.result, row.error)
    assert not forged_marker.exists()
    wait_for(lambda: consumer_backlog(live_nats.url) == 0, what="the forged message to be settled")


def test_forged_message_for_a_task_of_another_pool_is_not_run(client, pools, live_nats, start_worker, tmp_path):
    ensure_topology(live_nats.url)
    task_id = str(uuid.uuid4())
    Task.objects.create(id=task_id, function_name="wk_gpu_pid", status="queued", pool="gpu", execution_mode="async",
                        created_at=timezone.now(), timeout_ms=10_000)

    async def publish(nc: Client, js: JetStreamContext) -> None:
        await js.publish(task_subject("async", "wk_gpu_pid"),
                         encode_task_message(task_id=task_id, function="wk_gpu_pid", args={}, max_retries=0,
                                             timeout_ms=10_000))

    nats_call(live_nats.url, publish)
    start_worker("async")
    wait_for(lambda: consumer_backlog(live_nats.url) == 0, what="the forged message to be settled")
    row = task_row(task_id)
    assert row.status == "queued" and row.attempt == 0 and row.started_at is None


def test_forged_cancel_does_not_kill_a_running_task(client, pools, live_nats, start_worker, tmp_path):
    start_worker("async")
    pid_file = tmp_path / "pid"
    task_id = submit(client, "wk_pid_sleep", pid_path=str(pid_file), seconds=2)
    wait_status(task_id, "running")
    pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), what="the task's pid"))

    async def forge_cancel(nc: Client, js: JetStreamContext) -> None:
        await nc.publish(CANCEL_SUBJECT, json.dumps({"task_id": task_id}).encode())
        await nc.flush()

    nats_call(live_nats.url, forge_cancel)
    row = wait_status(task_id, "completed", "failed", "cancelled")
    assert row.status == "completed" and row.result == pid, (row.status, row.error)
    wait_for(lambda: consumer_backlog(live_nats.url) == 0, what="the message to be acked")


# --- what a task sees ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("pool", "task"), [("async", "wk_environ"), ("gpu", "wk_gpu_environ")])
def test_task_children_do_not_see_the_workers_secrets(client, pools, live_nats, start_worker, pool, task):
    """Forkserver (async) and spawn (gpu) children start from an allow-listed environment."""
    secret = f"secret-{uuid.uuid4().hex}"
    start_worker(pool, env={"DJANGO_SECRET_KEY": secret, "NEUTRINO_NATS_URL": live_nats.url,
                            "NEUTRINO_CHILD_ENV": "NEUTRINO_TEST_PASSED", "NEUTRINO_TEST_PASSED": "yes"})
    row = wait_status(submit(client, task), "completed", "failed")
    assert row.status == "completed", row.error
    environ, proc = row.result["environ"], row.result["proc"]
    for name in ("DJANGO_SECRET_KEY", "DATABASE_URL", "NEUTRINO_NATS_URL", "NEUTRINO_SQLITE_PATH"):
        assert name not in environ
        assert f"{name}=" not in proc
    assert secret not in str(environ) and secret not in proc
    assert live_nats.url not in proc
    assert environ["NEUTRINO_TEST_PASSED"] == "yes"  # what the operator lists passes
    assert environ.get("PATH")


def test_nul_in_a_queued_tasks_result_error_or_progress_is_stored_escaped(client, pools, live_nats, start_worker):
    start_worker("async", concurrency=2)

    completed = submit(client, "wk_nul", fail=False)
    failed = submit(client, "wk_nul", fail=True)

    row = wait_status(completed, "completed")
    assert row.result == {"text": "before\\u0000after"} and row.progress_message == "half\\u0000way"
    row = wait_status(failed, "failed")
    assert row.attempt == 2 and row.error_type == "ValueError"  # retried once (a NUL in the retry's error), then failed
    assert "bad\\u0000byte" in row.error and "\x00" not in row.traceback and "bad\\u0000byte" in row.traceback
    (past,) = TaskAttempt.objects.filter(task_id=failed)
    assert "bad\\u0000byte" in past.error


def test_a_busy_worker_of_long_tasks_holds_no_message_another_worker_could_start(
        client, pools, live_nats, start_worker, tmp_path):
    """Prefetch is for short tasks only: a worker whose only slot runs a long task leaves the next one
    in the stream, so a second worker starts it at once instead of after the first run."""
    first = start_worker("async", concurrency=1)
    log = tmp_path / "runs"
    long_one = submit(client, "wk_log_start_and_end", log_path=str(log), tag="first", seconds=8)
    assert wait_status(long_one, "running").worker_id == first.worker_id
    second_task = submit(client, "wk_log_start_and_end", log_path=str(log), tag="second", seconds=0.5)
    time.sleep(0.5)  # the first worker has had time to fetch it, were it going to
    second = start_worker("async", concurrency=1)

    row = wait_status(second_task, "completed", timeout_s=20)
    assert row.worker_id == second.worker_id
    assert task_row(long_one).status == "running", "the second task waited for the first to end"
    assert wait_status(long_one, "completed", timeout_s=20).worker_id == first.worker_id
