"""Retry with changes: `POST /tasks/<id>/retry` with other args, timeout or pool, validated as a submit is,
and the new task recording what changed. Queued tasks go to a real nats-server of the test's own."""

from __future__ import annotations

import pytest

from tasks_app.models import Task
from tests.tasks_app.test_api_production import assert_error, post

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_queued_task_retried_with_other_args_timeout_and_pool(client, default_pools, private_nats,
                                                                ledger_flush) -> None:
    original = post(client, "/api/wk_add", {"args": {"a": 1, "b": 2}}).json()["task_id"]
    response = post(client, f"/tasks/{original}/retry",
                    {"args": {"a": 10, "b": 20}, "options": {"timeout_ms": 1234, "pool": "gpu"}})
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["retry_of"] == original and body["status"] == "queued"
    assert body["changes"] == {"args": {"before": {"a": 1, "b": 2}, "after": {"a": 10, "b": 20}},
                               "timeout_ms": {"before": 10000, "after": 1234},
                               "pool": {"before": "async", "after": "gpu"}}
    ledger_flush()
    row = Task.objects.get(id=body["task_id"])
    assert (row.args, row.timeout_ms, row.pool, str(row.retry_of_id)) == ({"a": 10, "b": 20}, 1234, "gpu", original)
    assert row.retry_changes == body["changes"]
    assert private_nats.stream_messages() == 2  # the original's message and the retry's, on the gpu pool
    shown = client.get(f"/tasks/{row.id}").json()
    assert shown["retry_changes"] == body["changes"] and shown["pool"] == "gpu"


def test_a_sync_task_retried_with_other_args_runs_them(client, ledger_flush) -> None:
    first = post(client, "/api/add", {"args": {"a": 1, "b": 1}}).json()
    ledger_flush()
    response = post(client, f"/tasks/{first['task_id']}/retry", {"args": {"a": 40, "b": 2}})
    assert response.status_code == 200, response.content
    assert response.json()["result"] == 42
    ledger_flush()
    row = Task.objects.get(id=response.json()["task_id"])
    assert row.args == {"a": 40, "b": 2}
    assert row.retry_changes == {"args": {"before": {"a": 1, "b": 1}, "after": {"a": 40, "b": 2}}}


def test_the_same_args_change_nothing_and_are_not_recorded(client, default_pools, private_nats) -> None:
    original = post(client, "/api/wk_add", {"args": {"a": 1, "b": 2}}).json()["task_id"]
    response = post(client, f"/tasks/{original}/retry", {"args": {"a": 1, "b": 2}, "options": {"pool": "async"}})
    assert response.status_code == 202 and response.json()["changes"] is None


def test_bad_changes_are_422_naming_the_field_and_make_no_task(client, default_pools, private_nats,
                                                               ledger_flush) -> None:
    queued = post(client, "/api/wk_add", {"args": {"a": 1, "b": 2}}).json()["task_id"]
    sync = post(client, "/api/add", {"args": {"a": 1, "b": 1}}).json()["task_id"]
    ledger_flush()
    before = Task.objects.count()
    body = assert_error(post(client, f"/tasks/{queued}/retry", {"args": {"a": "one", "b": 2}}), 422, "a:")
    assert body["fields"][0]["field"] == "a"
    for bad in (0, -5, 1.5, "10", True, 24 * 3600 * 1000 + 1):
        body = assert_error(post(client, f"/tasks/{queued}/retry", {"options": {"timeout_ms": bad}}), 422,
                            "timeout_ms")
        assert body["field"] == "options.timeout_ms"
    assert_error(post(client, f"/tasks/{sync}/retry", {"options": {"timeout_ms": 120_000}}), 422, "sync task")
    assert_error(post(client, f"/tasks/{sync}/retry", {"options": {"pool": "async"}}), 422, "fast pool")
    assert_error(post(client, f"/tasks/{queued}/retry", {"options": {"pool": "fast"}}), 422, "NATS pool")
    assert_error(post(client, f"/tasks/{queued}/retry", {"options": {"pool": "nope"}}), 422, "'nope'")
    assert_error(post(client, f"/tasks/{queued}/retry", {"options": {"priority": 1}}), 422, "options.priority")
    assert_error(post(client, f"/tasks/{queued}/retry", {"arguments": {}}), 422, "arguments")
    assert_error(post(client, f"/tasks/{queued}/retry", {"args": [1, 2]}), 422, "args")
    assert Task.objects.count() == before
