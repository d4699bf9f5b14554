"""Delayed tasks and expiry through the API and the scheduler's services, in this process: a delayed submit
writes a `scheduled` row and no message; the release job queues what is due, once; run-now, cancel and the
list filter; expiry at submit, by the job and by a worker's claim. A real nats-server of the test's own.

The scheduler and worker processes themselves are in tests/workers/test_delayed_tasks.py.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from neutrino_site.process import http_ports
from tasks_app.core.errors import BrokerUnavailable
from tasks_app.models import Task
from tasks_app.services.delays import move_rows, task_run_now, tasks_expire_due, tasks_release_due
from tasks_app.services.republish import task_republish_pending
from tasks_app.services.tasks import task_mark_running
from workers.engine.broker.publisher import Publisher

pytestmark = pytest.mark.django_db(transaction=True)


def post(client, path: str, body: object):
    return client.post(path, json.dumps(body), content_type="application/json")


def assert_422(response, field: str, *words: str) -> dict:
    assert response.status_code == 422, (response.status_code, response.content[:500])
    body = response.json()
    assert field in [f["field"] for f in body.get("fields", [])], body
    for word in words:
        assert word in body["message"], (word, body["message"])
    return body


def at(seconds: float) -> str:
    return (timezone.now() + timedelta(seconds=seconds)).isoformat()


def make_due(*task_ids: str, ago_s: float = 1.0) -> None:
    """Move the rows' run_at into the past, as time passing would."""
    Task.objects.filter(id__in=task_ids).update(run_at=timezone.now() - timedelta(seconds=ago_s))


@pytest.fixture
def pools(default_pools):
    return default_pools


# --- submitting ------------------------------------------------------------------------------------


def test_a_delayed_submit_is_scheduled_with_no_message(client, pools, private_nats) -> None:
    response = post(client, "/api/wk_noop", {"args": {"n": 1}, "delay_s": 3600})
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "scheduled" and body["poll_url"] == f"/tasks/{body['task_id']}"
    row = Task.objects.get(id=body["task_id"])
    assert row.status == "scheduled" and row.run_at is not None and row.expires_at is None
    assert abs(datetime.fromisoformat(body["run_at"]) - row.run_at) < timedelta(milliseconds=1)
    assert private_nats.stream_messages() == 0, "no message exists before run_at"
    shown = client.get(f"/tasks/{row.id}").json()
    assert shown["status"] == "scheduled"
    assert abs(datetime.fromisoformat(shown["run_at"]) - row.run_at) < timedelta(milliseconds=1)


def test_run_at_with_an_offset_is_kept_as_that_moment(client, pools, private_nats) -> None:
    moment = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    local = moment.astimezone(timezone.get_fixed_timezone(-300)).isoformat()  # the same moment at UTC-5
    body = post(client, "/api/wk_noop", {"args": {}, "run_at": local}).json()
    assert Task.objects.get(id=body["task_id"]).run_at == moment


def test_a_time_past_or_a_zero_delay_queues_at_once(client, pools, private_nats, ledger_flush) -> None:
    ids = [post(client, "/api/wk_noop", {"args": {}, **timing}).json()["task_id"]
           for timing in ({"delay_s": 0}, {"run_at": at(-60)})]
    ledger_flush()
    assert [Task.objects.get(id=i).status for i in ids] == ["queued", "queued"]
    assert all(Task.objects.get(id=i).run_at is None for i in ids)
    assert private_nats.stream_messages() == 2


def test_bad_timing_is_a_422_naming_the_field_and_writes_nothing(client, pools, private_nats) -> None:
    naive = datetime.now().replace(microsecond=0).isoformat()
    assert_422(post(client, "/api/wk_noop", {"args": {}, "run_at": naive}), "run_at", "UTC offset")
    assert_422(post(client, "/api/wk_noop", {"args": {}, "run_at": "tomorrow"}), "run_at", "ISO 8601")
    assert_422(post(client, "/api/wk_noop", {"args": {}, "run_at": 12}), "run_at")
    both = assert_422(post(client, "/api/wk_noop", {"args": {}, "run_at": at(60), "delay_s": 5}), "delay_s")
    assert {f["field"] for f in both["fields"]} == {"run_at", "delay_s"}
    assert_422(post(client, "/api/wk_noop", {"args": {}, "delay_s": -1}), "delay_s", ">= 0")
    assert_422(post(client, "/api/wk_noop", {"args": {}, "delay_s": True}), "delay_s")
    assert_422(post(client, "/api/wk_noop", {"args": {}, "delay_s": 1e300}), "delay_s", "too far")
    assert_422(post(client, "/api/wk_noop", {"args": {}, "expires_s": 0}), "expires_s", "> 0")
    assert_422(post(client, "/api/wk_noop", {"args": {}, "expires_s": 5, "expires_at": at(60)}), "expires_at")
    assert_422(post(client, "/api/wk_noop", {"args": {}, "expires_at": at(-1)}), "expires_at", "before it could run")
    assert_422(post(client, "/api/wk_noop", {"args": {}, "delay_s": 120, "expires_s": 60}), "expires_s",
               "not from run_at")
    assert Task.objects.count() == 0 and private_nats.stream_messages() == 0


def test_a_sync_task_cannot_be_delayed_or_expire(client) -> None:
    body = assert_422(post(client, "/api/add", {"args": {"a": 1, "b": 2}, "delay_s": 5}), "delay_s")
    assert "sync tasks answer in their response; make it async to delay it" in body["message"]
    assert_422(post(client, "/api/add", {"args": {"a": 1, "b": 2}, "expires_s": 5}), "expires_s", "async")
    assert Task.objects.count() == 0


def test_expiry_is_counted_from_the_submit_and_a_task_default_applies(client, pools, private_nats) -> None:
    before = timezone.now()
    given = post(client, "/api/wk_noop", {"args": {}, "delay_s": 60, "expires_s": 90}).json()
    row = Task.objects.get(id=given["task_id"])
    assert row.status == "scheduled" and row.expires_at is not None and row.run_at is not None
    assert before + timedelta(seconds=90) <= row.expires_at < row.run_at + timedelta(seconds=90)
    assert abs(datetime.fromisoformat(given["expires_at"]) - row.expires_at) < timedelta(milliseconds=1)
    default = Task.objects.get(id=post(client, "/api/wk_expiring", {"args": {}}).json()["task_id"])
    assert default.expires_at is not None and default.expires_at - default.created_at <= timedelta(seconds=30)
    # The default counts from the submit too: a delay past it needs an expiry of the caller's own.
    body = assert_422(post(client, "/api/wk_expiring", {"args": {}, "delay_s": 60}), "expires_s",
                      "default expires_s")
    assert "30" in body["message"]
    longer = post(client, "/api/wk_expiring", {"args": {}, "delay_s": 60, "expires_s": 120})
    assert longer.status_code == 202 and longer.json()["status"] == "scheduled"


def test_a_batch_shares_one_run_at(client, pools, private_nats) -> None:
    run_at = at(600)
    response = post(client, "/api/wk_noop/batch", {"items": [{"args": {"n": i}} for i in range(3)],
                                                   "run_at": run_at, "expires_s": 900})
    assert response.status_code == 202, response.content
    items = response.json()["items"]
    assert [item["status"] for item in items] == ["scheduled"] * 3
    rows = Task.objects.filter(id__in=[item["task_id"] for item in items])
    assert {(r.status, r.run_at) for r in rows} == {("scheduled", datetime.fromisoformat(run_at))}
    assert all(r.expires_at is not None for r in rows)
    assert private_nats.stream_messages() == 0
    assert_422(post(client, "/api/wk_noop/batch", {"items": [{"args": {}}], "delay_s": -5}), "delay_s")


def test_the_list_filters_on_the_new_statuses(client, pools, private_nats) -> None:
    scheduled = post(client, "/api/wk_noop", {"args": {}, "delay_s": 600}).json()["task_id"]
    Task.objects.create(function_name="wk_noop", status="expired", pool="async", execution_mode="async",
                        created_at=timezone.now(), timeout_ms=1000, created_by="anonymous")
    assert [i["task_id"] for i in client.get("/tasks?status=scheduled").json()["items"]] == [scheduled]
    assert [i["status"] for i in client.get("/tasks?status=expired").json()["items"]] == ["expired"]
    assert client.get("/tasks?status=later").status_code == 400


# --- the release job -------------------------------------------------------------------------------


def test_the_release_queues_the_due_tasks_once_soonest_first(client, pools, private_nats, ledger_flush) -> None:
    due = [post(client, "/api/wk_noop", {"args": {"n": i}, "delay_s": 3600}).json()["task_id"] for i in range(3)]
    later = post(client, "/api/wk_noop", {"args": {}, "delay_s": 3600}).json()["task_id"]
    for index, task_id in enumerate(due):
        make_due(task_id, ago_s=10 - index)
    ports = http_ports()

    assert tasks_release_due(ports=ports, chunk=2) == 3, "two chunks of at most 2"
    ledger_flush()
    rows = {str(r.id): r for r in Task.objects.all()}
    assert [rows[i].status for i in due] == ["queued"] * 3 and rows[later].status == "scheduled"
    assert all(rows[i].queued_at is not None and rows[i].run_at is not None for i in due)
    assert private_nats.stream_messages() == 3
    assert tasks_release_due(ports=ports) == 0, "a released task is never released again"
    assert private_nats.stream_messages() == 3


def test_two_claims_of_the_same_due_rows_move_each_row_once(client, pools, private_nats) -> None:
    ids = [post(client, "/api/wk_noop", {"args": {"n": i}, "delay_s": 3600}).json()["task_id"] for i in range(4)]
    make_due(*ids)
    due = Task.objects.filter(status="scheduled", run_at__lte=timezone.now()).order_by("run_at")
    first = move_rows(due, chunk=3, statuses=["scheduled"], set_values={"status": "pending"})
    second = move_rows(due, chunk=3, statuses=["scheduled"], set_values={"status": "pending"})
    assert len(first) == 3 and len(second) == 1 and not set(first) & set(second)
    assert sorted(str(i) for i in first + second) == sorted(ids)


def test_claims_without_returning_move_each_row_once(client, pools, private_nats, monkeypatch) -> None:
    monkeypatch.setattr(connection.features, "can_return_columns_from_insert", False)
    ids = [post(client, "/api/wk_noop", {"args": {"n": i}, "delay_s": 3600}).json()["task_id"] for i in range(3)]
    make_due(*ids)
    due = Task.objects.filter(status="scheduled", run_at__lte=timezone.now()).order_by("run_at")
    assert len(move_rows(due, chunk=10, statuses=["scheduled"], set_values={"status": "pending"})) == 3
    assert move_rows(due, chunk=10, statuses=["scheduled"], set_values={"status": "pending"}) == []


def test_a_release_cut_short_before_its_publish_is_left_to_the_sweeper(client, pools, private_nats,
                                                                       ledger_flush) -> None:
    """The scheduler died between its UPDATE and its publish: the rows are pending, created long ago."""
    on_time, late = (post(client, "/api/wk_noop", {"args": {}, "delay_s": 3600}).json()["task_id"] for _ in range(2))
    Task.objects.filter(id__in=[on_time, late]).update(created_at=timezone.now() - timedelta(hours=2))
    make_due(on_time, ago_s=0.5)
    make_due(late, ago_s=600)
    due = Task.objects.filter(status="scheduled", run_at__lte=timezone.now())
    assert len(move_rows(due, chunk=10, statuses=["scheduled"], set_values={"status": "pending"})) == 2

    # A row released on time is not republished while the release could still be publishing it ...
    assert task_republish_pending(ports=http_ports(), pool="async", older_than_s=60) == 1
    assert Task.objects.get(id=late).status == "queued" and Task.objects.get(id=on_time).status == "pending"
    # ... and is once its run_at is older than the sweeper's wait.
    assert task_republish_pending(ports=http_ports(), pool="async", older_than_s=0.1) == 1
    assert private_nats.stream_messages() == 2
    assert tasks_release_due(ports=http_ports()) == 0


def test_nats_down_puts_the_released_tasks_back_to_scheduled(client, pools, private_nats) -> None:
    ids = [post(client, "/api/wk_noop", {"args": {"n": i}, "delay_s": 3600}).json()["task_id"] for i in range(3)]
    make_due(*ids)
    # A publisher with no NATS behind it: every publish raises BrokerDown (nothing was sent).
    down = dataclasses.replace(http_ports(), publisher=Publisher(None, timeout_s=1.0))

    assert tasks_release_due(ports=down) == 0
    assert set(Task.objects.filter(id__in=ids).values_list("status", flat=True)) == {"scheduled"}
    with pytest.raises(BrokerUnavailable, match="stays scheduled"):
        task_run_now(ports=down, task_id=uuid.UUID(ids[0]))
    assert Task.objects.get(id=ids[0]).status == "scheduled"
    assert private_nats.stream_messages() == 0
    assert tasks_release_due(ports=http_ports()) == 3, "queued once NATS is back"


# --- run now and cancel ----------------------------------------------------------------------------


def test_run_now_queues_a_scheduled_task_at_once(client, pools, private_nats, ledger_flush) -> None:
    task_id = post(client, "/api/wk_noop", {"args": {}, "delay_s": 3600}).json()["task_id"]
    response = client.post(f"/tasks/{task_id}/run-now", content_type="application/json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["task_id"] == task_id and body["status"] in ("pending", "queued")
    assert datetime.fromisoformat(body["run_at"]) <= timezone.now()
    ledger_flush()
    assert Task.objects.get(id=task_id).status == "queued" and private_nats.stream_messages() == 1
    again = client.post(f"/tasks/{task_id}/run-now", content_type="application/json")
    assert again.status_code == 409 and "not scheduled" in again.json()["message"]
    assert private_nats.stream_messages() == 1


def test_a_cancelled_scheduled_task_is_never_released(client, pools, private_nats) -> None:
    task_id = post(client, "/api/wk_noop", {"args": {}, "delay_s": 3600}).json()["task_id"]
    response = client.delete(f"/tasks/{task_id}")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    make_due(task_id)
    assert tasks_release_due(ports=http_ports()) == 0
    assert client.post(f"/tasks/{task_id}/run-now", content_type="application/json").status_code == 409
    assert Task.objects.get(id=task_id).status == "cancelled" and private_nats.stream_messages() == 0


# --- expiry ----------------------------------------------------------------------------------------


def test_the_expiry_job_ends_every_waiting_status_and_nothing_else(client, pools, private_nats,
                                                                  ledger_flush) -> None:
    scheduled = post(client, "/api/wk_noop", {"args": {}, "delay_s": 60, "expires_s": 120}).json()["task_id"]
    queued = post(client, "/api/wk_noop", {"args": {}, "expires_s": 120}).json()["task_id"]
    fresh = post(client, "/api/wk_noop", {"args": {}, "expires_s": 120}).json()["task_id"]
    ledger_flush()
    running = Task.objects.create(function_name="wk_noop", status="running", pool="async", execution_mode="async",
                                  created_at=timezone.now(), timeout_ms=1000,
                                  expires_at=timezone.now() - timedelta(seconds=1))
    Task.objects.filter(id__in=[scheduled, queued]).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert tasks_expire_due(ports=http_ports(), chunk=1) == 2
    rows = {str(r.id): r for r in Task.objects.all()}
    for task_id in (scheduled, queued):
        assert rows[task_id].status == "expired" and rows[task_id].completed_at is not None
        assert rows[task_id].error_type == "Expired" and "expires_at" in rows[task_id].error
    assert rows[fresh].status == "queued" and rows[str(running.id)].status == "running", "started: not expired"
    assert tasks_expire_due(ports=http_ports()) == 0
    assert client.delete(f"/tasks/{queued}").status_code == 409, "expired is finished"
    make_due(scheduled)
    assert tasks_release_due(ports=http_ports()) == 0


def test_a_claim_refuses_an_expired_task_and_ends_it(client, pools, private_nats, ledger_flush) -> None:
    task_id = post(client, "/api/wk_noop", {"args": {}, "expires_s": 120}).json()["task_id"]
    ledger_flush()
    Task.objects.filter(id=task_id).update(expires_at=timezone.now() - timedelta(milliseconds=1))
    ports = http_ports()
    assert task_mark_running(events=ports.events, task_id=task_id, pool="async", attempt=1, worker_id="h:1") is None
    row = Task.objects.get(id=task_id)
    assert (row.status, row.started_at, row.error_type) == ("expired", None, "Expired")
    assert row.completed_at is not None

    fresh = post(client, "/api/wk_noop", {"args": {}, "expires_s": 120}).json()["task_id"]
    claimed = task_mark_running(events=ports.events, task_id=fresh, pool="async", attempt=1, worker_id="h:1")
    assert claimed is not None and Task.objects.get(id=fresh).status == "running"


def test_the_openapi_document_shows_the_timing_fields_and_statuses(client) -> None:
    schema = client.get("/api/openapi.json").json()
    queued = schema["paths"]["/api/wk_noop"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"run_at", "delay_s", "expires_at", "expires_s"} <= set(queued["properties"])
    sync = schema["paths"]["/api/add"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(sync["properties"]) == {"args", "callback_url"}  # no timing: a sync task answers at once
    batch = schema["paths"]["/api/wk_noop/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "run_at" in batch["properties"]
    assert "/tasks/{task_id}/run-now" in schema["paths"]
    task_out = schema["components"]["schemas"]["TaskOut"]["properties"]
    assert {"run_at", "expires_at"} <= set(task_out)
    listing = schema["paths"]["/tasks"]["get"]["parameters"]
    status = next(p for p in listing if p["name"] == "status")
    assert "scheduled" in status["description"] and "expired" in status["description"]
