"""Alerts and callbacks end to end: the HTTP API in this process, real worker and `neutrino scheduler`
processes on this test's database, and a real HTTP receiver. No mocks.

Every wait is bounded and polls; no test asserts on wall time.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from tasks_app.alert_models import AlertKind, AlertRule, DeliveryStatus, WebhookDelivery, WebhookTarget
from tasks_app.models import Task, TaskStatus
from tests.conftest import WORKER_ACK_WAIT_S, WorkerProcess, _worker_database_env
from tests.servers import wait_for
from tests.webhook_receiver import Receiver, webhook_receiver
from tests.workers.test_nats_worker import ensure_topology, wait_status

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

CALLBACK_SECRET = "callbacks-secret-of-these-tests"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as running:
        yield running


@pytest.fixture
def start_scheduler(live_nats: Any, tmp_path: Path) -> Iterator[Callable[[], WorkerProcess]]:
    """Factory: start_scheduler() -> a `neutrino scheduler` process on this test's database and NATS,
    evaluating alerts and sending webhooks every 0.2 s, allowed to call 127.0.0.1 (the receiver)."""
    started: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        env = {
            **os.environ, **_worker_database_env(),
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
            "NEUTRINO_ACK_WAIT_S": str(WORKER_ACK_WAIT_S), "NEUTRINO_HEARTBEAT_S": "1",
            "NEUTRINO_ALERTS_EVERY_S": "0.2", "NEUTRINO_WEBHOOKS_EVERY_S": "0.2", "NEUTRINO_WEBHOOK_BACKOFF_S": "0.2",
            "NEUTRINO_WEBHOOK_ALLOWED_HOSTS": "*,127.0.0.1", "NEUTRINO_CALLBACK_SECRET": CALLBACK_SECRET,
            "NEUTRINO_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1",
        }
        argv = [sys.executable, "-m", "neutrino_site.cli", "scheduler", "--nats-url", live_nats.url]
        scheduler = WorkerProcess(argv, env, tmp_path / f"scheduler-{len(started)}.log")
        started.append(scheduler)
        return scheduler

    yield start
    for scheduler in started:
        scheduler.stop()
    for index, scheduler in enumerate(started):
        print(f"----- scheduler {index} (exit {scheduler.process.returncode}) -----\n{scheduler.log()}")


@pytest.fixture
def gateway(settings: Any, default_pools: Any, live_nats: Any) -> None:
    """This process's API accepts callbacks to the receiver, and the stream exists before any submit."""
    settings.NEUTRINO_WEBHOOK_ALLOWED_HOSTS = ["*", "127.0.0.1"]
    ensure_topology(live_nats.url)


def submit(client: Any, task: str, args: dict[str, Any], callback_url: str, expect: int = 202) -> str:
    response = client.post(f"/api/{task}", {"args": args, "callback_url": callback_url},
                           content_type="application/json")
    assert response.status_code == expect, response.content
    return str(response.json()["task_id"])


def test_callbacks_of_finished_tasks_reach_the_receiver_signed_and_retried(
        client: Any, gateway: None, start_worker: Any, start_scheduler: Any, receiver: Receiver,
        ledger_flush: Any) -> None:
    start_worker("async")
    done = submit(client, "wk_add", {"a": 2, "b": 3}, receiver.url + "/cb/done")
    wait_status(done, "completed")
    assert Task.objects.get(id=done).callback_url is not None, "kept until a scheduler takes it"
    # The task finished while no scheduler ran: the first one to start sends its callback.
    receiver.answer_next(500)
    start_scheduler()
    wait_for(lambda: len(receiver.requests()) >= 2, what="the callback, retried after its 500")
    first, second = receiver.requests()
    assert (first.path, first.answered, second.path, second.answered) == ("/cb/done", 500, "/cb/done", 200)
    assert first.body == second.body and first.signed_by(CALLBACK_SECRET) and second.signed_by(CALLBACK_SECRET)
    body = second.json
    assert body["event"] == "task.finished" and second.event == "task.finished"
    assert body["task"]["task_id"] == done and body["task"]["status"] == "completed"
    assert body["task"]["result"] == 5 and body["task"]["function"] == "wk_add" and body["task"]["error"] is None
    assert body["task"]["completed_at"] and body["task"]["started_at"] and body["task"]["created_at"]
    delivery = WebhookDelivery.objects.get(task_id=done)
    wait_for(lambda: WebhookDelivery.objects.get(id=delivery.id).status == DeliveryStatus.DELIVERED,
             what="the delivery row to say delivered")
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.last_status_code) == (2, 200)

    failed = submit(client, "wk_always_fails", {"message": "nope"}, receiver.url + "/cb/failed")
    synced = submit(client, "echo", {"value": "hi"}, receiver.url + "/cb/sync", expect=200)
    ledger_flush()
    wait_for(lambda: {r.path for r in receiver.requests()} >= {"/cb/failed", "/cb/sync"},
             what="the failed and the sync task's callbacks", timeout_s=60)
    by_path = {r.path: r.json["task"] for r in receiver.requests()}
    assert by_path["/cb/failed"]["task_id"] == failed and by_path["/cb/failed"]["status"] == "failed"
    assert "nope" in by_path["/cb/failed"]["error"] and by_path["/cb/failed"]["result"] is None
    assert by_path["/cb/sync"]["task_id"] == synced and by_path["/cb/sync"]["result"] == "hi"
    assert len(receiver.requests()) == 4, "one callback per task (and the one retry)"
    assert not Task.objects.filter(callback_url__isnull=False).exists()


def test_a_rule_fires_and_clears_once_with_two_schedulers(
        gateway: None, start_scheduler: Any, receiver: Receiver) -> None:
    target = WebhookTarget.objects.create(name="ops", url=receiver.url + "/alerts")
    rule = AlertRule.objects.create(name="async backlog", kind=AlertKind.BACKLOG, pool="async", threshold=2,
                                    target=target)
    schedulers = [start_scheduler(), start_scheduler()]
    now = timezone.now()
    Task.objects.bulk_create([
        Task(function_name="wk_add", status=TaskStatus.QUEUED, pool="async", execution_mode="async",
             created_at=now, timeout_ms=1000, args={"a": i, "b": 0}) for i in range(3)])
    wait_for(lambda: receiver.requests("alert.firing"), what="the alert to fire")
    assert AlertRule.objects.get(id=rule.id).state == "firing"
    Task.objects.filter(function_name="wk_add").update(status=TaskStatus.COMPLETED, completed_at=timezone.now())
    wait_for(lambda: receiver.requests("alert.resolved"), what="the alert to clear")
    # Both schedulers go on evaluating the cleared rule a few more rounds: still one notification each way.
    def evaluated_after(previous: Any) -> Any:
        at = AlertRule.objects.get(id=rule.id).evaluated_at
        return at if at != previous else None

    seen = AlertRule.objects.get(id=rule.id).evaluated_at
    for _ in range(5):
        seen = wait_for(lambda previous=seen: evaluated_after(previous), what="another evaluation")
    assert [r.event for r in receiver.requests()] == ["alert.firing", "alert.resolved"]
    fired, cleared = (r.json for r in receiver.requests())
    assert fired["rule"]["name"] == "async backlog" and fired["value"] == 3.0 and fired["state"] == "firing"
    assert cleared["state"] == "ok" and cleared["value"] == 0.0
    assert all(r.signed_by(target.secret) for r in receiver.requests())
    assert all(scheduler.process.poll() is None for scheduler in schedulers)
    # Each change was made by one of the two processes (a job logs how many changes it made).
    logs = "".join(scheduler.log() for scheduler in schedulers)
    assert logs.count("alerts: 1") == 2, logs
