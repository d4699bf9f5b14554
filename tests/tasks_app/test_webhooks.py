"""Webhook deliveries against a real receiver: signed bodies, a retry after a 500, the give-up, and task
callbacks queued once per finished task through their partial index."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from neutrino.webhooks import signature_header, verify_signature
from tasks_app.adapters.webhook_sender import WebhookSender
from tasks_app.alert_models import DeliveryEvent, DeliveryStatus, WebhookDelivery, WebhookTarget
from tasks_app.core.conf import neutrino_settings
from tasks_app.core.webhook_policy import AllowList
from tasks_app.models import Task, TaskStatus
from tasks_app.services.webhooks import callbacks_collect, webhook_enqueue, webhooks_send_due
from tests.webhook_receiver import Receiver, webhook_receiver

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as running:
        yield running


@pytest.fixture
def sender(settings) -> Iterator[WebhookSender]:
    settings.NEUTRINO_WEBHOOK_ALLOWED_HOSTS = ["*", "127.0.0.1"]
    sender = WebhookSender(allow=AllowList.parse(["*", "127.0.0.1"]), timeout_s=5)
    yield sender
    sender.close()


def make_due(delivery: WebhookDelivery) -> None:
    """Bring a delivery's next attempt to now (instead of sleeping through its backoff)."""
    WebhookDelivery.objects.filter(id=delivery.id).update(next_attempt_at=timezone.now())


def test_signature_round_trip_and_what_it_refuses() -> None:
    body = b'{"event":"alert.firing"}'
    header = signature_header("s3cret", body, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify_signature("s3cret", body, header, now=1_700_000_100)
    assert not verify_signature("other", body, header, now=1_700_000_100)
    assert not verify_signature("s3cret", body + b" ", header, now=1_700_000_100)
    assert not verify_signature("s3cret", body, header, now=1_700_000_000 + 301), "an old timestamp is a replay"
    assert not verify_signature("s3cret", body, header.replace("t=1700000000", "t=1700000001"), now=1_700_000_000)
    assert not verify_signature("s3cret", body, "garbage")


def test_an_alert_webhook_is_signed_with_its_targets_secret(receiver: Receiver, sender: WebhookSender) -> None:
    target = WebhookTarget.objects.create(name="ops", url=receiver.url + "/hooks/neutrino")
    delivery = webhook_enqueue(url=target.url, event=DeliveryEvent.ALERT_FIRING, target=target,
                               payload={"event": "alert.firing", "value": 42.5}, now=timezone.now())
    assert webhooks_send_due(sender=sender) == 1
    [got] = receiver.requests()
    assert got.path == "/hooks/neutrino" and got.event == "alert.firing" and got.delivery == str(delivery.id)
    assert got.headers["content-type"] == "application/json"
    assert got.body == delivery.payload.encode() and got.json == {"event": "alert.firing", "value": 42.5}
    assert got.signed_by(target.secret)
    assert not got.signed_by(neutrino_settings().callback_secret)
    row = WebhookDelivery.objects.get(id=delivery.id)
    assert (row.status, row.attempts, row.last_status_code, row.last_error) == ("delivered", 1, 200, "")
    assert row.delivered_at is not None
    assert webhooks_send_due(sender=sender) == 0, "a delivered webhook is not sent again"


def test_a_500_is_retried_with_backoff_and_the_same_body(receiver: Receiver, sender: WebhookSender,
                                                         settings) -> None:
    settings.NEUTRINO_WEBHOOK_BACKOFF_S = 30
    receiver.answer_next(500)
    delivery = webhook_enqueue(url=receiver.url + "/cb", event=DeliveryEvent.TASK_FINISHED,
                               payload={"event": "task.finished"}, now=timezone.now())
    before = timezone.now()
    assert webhooks_send_due(sender=sender) == 1
    row = WebhookDelivery.objects.get(id=delivery.id)
    assert (row.status, row.attempts, row.last_status_code) == ("pending", 1, 500)
    assert "answered 500: receiver says no" in row.last_error
    assert row.next_attempt_at >= before + timedelta(seconds=29), "the retry waits for the backoff"
    assert webhooks_send_due(sender=sender) == 0, "not due yet"
    make_due(row)
    assert webhooks_send_due(sender=sender) == 1
    first, second = receiver.requests()
    assert (first.answered, second.answered) == (500, 200)
    assert first.body == second.body and first.delivery == second.delivery == str(delivery.id)
    secret = neutrino_settings().callback_secret
    assert first.signed_by(secret) and second.signed_by(secret)
    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_status_code, row.last_error) == ("delivered", 2, 200, "")


def test_a_delivery_fails_after_its_last_attempt(receiver: Receiver, sender: WebhookSender, settings) -> None:
    settings.NEUTRINO_WEBHOOK_MAX_ATTEMPTS = 3
    receiver.answer_next(503, 502, 500)
    delivery = webhook_enqueue(url=receiver.url, event=DeliveryEvent.TASK_FINISHED, payload={}, now=timezone.now())
    for _ in range(3):
        make_due(delivery)
        assert webhooks_send_due(sender=sender) == 1
    row = WebhookDelivery.objects.get(id=delivery.id)
    assert (row.status, row.attempts, row.last_status_code) == ("failed", 3, 500)
    make_due(row)
    assert webhooks_send_due(sender=sender) == 0
    assert len(receiver.requests()) == 3


def test_a_url_refused_when_sending_fails_at_once_without_a_request(sender: WebhookSender) -> None:
    delivery = webhook_enqueue(url="http://169.254.169.254/latest", event=DeliveryEvent.TASK_FINISHED,
                               payload={}, now=timezone.now())
    assert webhooks_send_due(sender=sender) == 1
    row = WebhookDelivery.objects.get(id=delivery.id)
    assert (row.status, row.attempts, row.last_status_code) == ("failed", 1, None)
    assert "refused" in row.last_error and "link-local" in row.last_error


def test_an_attempt_in_flight_is_not_sent_by_a_second_scheduler(receiver: Receiver, sender: WebhookSender) -> None:
    delivery = webhook_enqueue(url=receiver.url, event=DeliveryEvent.TASK_FINISHED, payload={}, now=timezone.now())
    # Another scheduler claimed this attempt (and died holding it): its lease keeps the row from others.
    claimed = WebhookDelivery.objects.filter(id=delivery.id, attempts=0).update(
        attempts=1, next_attempt_at=timezone.now() + timedelta(seconds=120))
    assert claimed == 1
    assert webhooks_send_due(sender=sender) == 0 and receiver.requests() == []
    make_due(delivery)  # the lease ran out: the attempt is made again
    assert webhooks_send_due(sender=sender) == 1
    assert WebhookDelivery.objects.get(id=delivery.id).attempts == 2 and len(receiver.requests()) == 1


# --- task callbacks -----------------------------------------------------------------------------------


def task_row(status: str, callback_url: str | None, **fields) -> Task:
    now = timezone.now()
    return Task.objects.create(function_name="wk_add", status=status, pool="async", execution_mode="async",
                               created_at=now, timeout_ms=1000, args={"a": 1, "b": 2}, attempt=1,
                               callback_url=callback_url, **fields)


def test_a_finished_task_with_a_callback_is_queued_once(receiver: Receiver, sender: WebhookSender) -> None:
    done_at = timezone.now()
    done = task_row(TaskStatus.COMPLETED, receiver.url + "/cb", result={"sum": 3}, completed_at=done_at,
                    started_at=done_at, duration_ms=1.5)
    failed = task_row(TaskStatus.FAILED, receiver.url + "/cb", error="ValueError: no", error_type="ValueError")
    running = task_row(TaskStatus.RUNNING, receiver.url + "/cb")
    task_row(TaskStatus.COMPLETED, None)
    assert callbacks_collect() == 2
    assert callbacks_collect() == 0, "a second scheduler finds nothing left to queue"
    assert set(WebhookDelivery.objects.values_list("task_id", flat=True)) == {done.id, failed.id}
    assert Task.objects.get(id=running.id).callback_url is not None, "a running task keeps its callback for later"
    assert Task.objects.get(id=done.id).callback_url is None
    assert webhooks_send_due(sender=sender) == 2
    by_task = {r.json["task"]["task_id"]: r.json for r in receiver.requests()}
    assert by_task[str(done.id)]["event"] == "task.finished"
    assert by_task[str(done.id)]["task"] | {"created_at": None, "started_at": None, "completed_at": None} == {
        "task_id": str(done.id), "function": "wk_add", "status": "completed", "pool": "async", "attempt": 1,
        "result": {"sum": 3}, "error": None, "error_type": None, "duration_ms": 1.5,
        "created_at": None, "started_at": None, "completed_at": None,
    }
    assert by_task[str(done.id)]["task"]["completed_at"].startswith(done_at.isoformat()[:19])
    assert by_task[str(failed.id)]["task"]["status"] == "failed"
    assert by_task[str(failed.id)]["task"]["error"] == "ValueError: no"
    assert all(r.signed_by(neutrino_settings().callback_secret) for r in receiver.requests())


def test_one_callback_per_task_even_if_two_schedulers_race() -> None:
    task = task_row(TaskStatus.COMPLETED, "http://93.184.216.34/cb")
    now = timezone.now()
    webhook_enqueue(url="http://93.184.216.34/cb", event=DeliveryEvent.TASK_FINISHED, payload={}, now=now,
                    task_id=task.id)  # the other scheduler's, committed between our read and our write
    assert callbacks_collect() == 0
    assert WebhookDelivery.objects.filter(task_id=task.id).count() == 1
    assert Task.objects.get(id=task.id).callback_url is None, "not read again every round"


def test_the_callback_scan_reads_only_the_partial_index() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("the plan is checked on SQLite; PostgreSQL's planner picks by table statistics")
    task_row(TaskStatus.COMPLETED, "http://93.184.216.34/cb")
    with CaptureQueriesContext(connection) as ran:
        callbacks_collect()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {ran.captured_queries[0]['sql']}")
        plan = " ".join(str(row) for row in cursor.fetchall())
    assert "idx_callback_due" in plan and "TEMP B-TREE" not in plan, plan


def test_finishing_a_task_without_a_callback_touches_no_callback_row() -> None:
    task = task_row(TaskStatus.RUNNING, None)
    Task.objects.filter(id=task.id, status=TaskStatus.RUNNING).update(status=TaskStatus.COMPLETED)
    assert callbacks_collect() == 0 and not WebhookDelivery.objects.exists()


def test_payload_is_stored_as_signed(receiver: Receiver, sender: WebhookSender) -> None:
    delivery = webhook_enqueue(url=receiver.url, event=DeliveryEvent.TASK_FINISHED, now=timezone.now(),
                               payload={"b": 1, "a": [uuid.UUID(int=1)], "at": timezone.now()})
    assert json.loads(delivery.payload)["a"] == [str(uuid.UUID(int=1))]
    webhooks_send_due(sender=sender)
    assert receiver.requests()[0].body == delivery.payload.encode()
    assert receiver.requests()[0].signed_by(neutrino_settings().callback_secret)
    assert WebhookDelivery.objects.get(id=delivery.id).status == DeliveryStatus.DELIVERED
