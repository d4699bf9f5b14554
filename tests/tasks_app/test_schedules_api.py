"""`/schedules` as a caller meets it (Django's test client; queued tasks go to a real nats-server of the
test's own): every operation, the 422s naming the field, 404 / 409, and who may manage schedules."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tasks_app.models import Schedule, ScheduleFire, Task
from tasks_app.services.tokens import token_create

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"name": "nightly-adds", "task": "wk_add", "args": {"a": 1, "b": 2}, "cron": "30 2 * * *",
        "timezone": "Europe/Paris", "missed": "once", "description": "adds at night"}


def send(client, method: str, path: str, body: Any = None, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = json.dumps(body) if body is not None else ""
    return client.generic(method, path, data, content_type="application/json", headers=headers)


def expect(response, status: int) -> Any:
    assert response.status_code == status, (response.status_code, response.content[:600])
    return response.json() if response.content else None


def test_create_read_list_change_pause_resume_delete(client) -> None:
    created = expect(send(client, "POST", "/schedules", BODY), 201)
    assert created["name"] == "nightly-adds" and created["task"] == "wk_add" and created["cron"] == "30 2 * * *"
    assert created["interval_s"] is None and created["enabled"] and created["source"] == "user"
    assert created["created_by"] == "anonymous" and len(created["next_runs"]) == 5
    assert all(run.endswith(("+01:00", "+02:00")) for run in created["next_runs"])  # shown in its zone
    assert created["next_run_at"] is not None and created["last_fire"] is None

    listed = expect(send(client, "GET", "/schedules"), 200)
    assert [item["name"] for item in listed["items"]] == ["nightly-adds"]
    assert expect(send(client, "GET", "/schedules?task=other"), 200)["items"] == []

    changed = expect(send(client, "PATCH", "/schedules/nightly-adds", {"interval_s": 600}), 200)
    assert changed["cron"] is None and changed["interval_s"] == 600 and changed["missed"] == "once"

    paused = expect(send(client, "POST", "/schedules/nightly-adds/pause"), 200)
    assert not paused["enabled"] and paused["next_run_at"] is None and paused["next_runs"] == []
    assert paused["paused_by"] == "anonymous"
    resumed = expect(send(client, "POST", "/schedules/nightly-adds/resume"), 200)
    assert resumed["enabled"] and resumed["next_run_at"] is not None

    assert expect(send(client, "DELETE", "/schedules/nightly-adds"), 200) == {"name": "nightly-adds", "deleted": True}
    expect(send(client, "GET", "/schedules/nightly-adds"), 404)
    assert not Schedule.objects.exists()


def test_run_now_queues_a_task_and_the_history_shows_it(client, private_nats, default_pools, ledger_flush) -> None:
    expect(send(client, "POST", "/schedules", {**BODY, "enabled": False}), 201)
    run = expect(send(client, "POST", "/schedules/nightly-adds/run"), 202)
    assert run["reason"] == "manual" and run["poll_url"] == f"/tasks/{run['task_id']}"
    ledger_flush()
    task = Task.objects.get(id=run["task_id"])
    assert task.created_by == "schedule:nightly-adds" and task.args == {"a": 1, "b": 2} and task.status == "queued"
    assert private_nats.stream_messages() == 1
    fires = expect(send(client, "GET", "/schedules/nightly-adds/fires"), 200)
    assert [(f["task_id"], f["task_status"], f["reason"]) for f in fires["items"]] == [(run["task_id"], "queued",
                                                                                        "manual")]
    assert fires["next_before"] is None
    shown = expect(send(client, "GET", "/schedules/nightly-adds"), 200)
    assert shown["last_fire"]["task_id"] == run["task_id"] and shown["last_fire"]["status"] == "queued"


@pytest.mark.parametrize(("change", "field"), [
    ({"task": "echo"}, "function_name"),
    ({"task": "nope"}, "function_name"),
    ({"cron": "* * * *"}, "cron"),
    ({"cron": "@fortnightly"}, "cron"),
    ({"interval_s": 30}, "cron"),  # both a cron and an interval
    ({"timezone": "Moon/Base"}, "timezone"),
    ({"args": {"a": "one", "b": 2}}, "args"),
    ({"missed": "maybe"}, "missed"),
    ({"catchup_max": 0}, "catchup_max"),
    ({"every": 5}, "every"),
    ({"name": "no spaces please"}, "name"),
])
def test_bad_input_is_a_422_naming_the_field(client, change: dict, field: str) -> None:
    body = expect(send(client, "POST", "/schedules", {**BODY, **change}), 422)
    assert body["error"] == "invalid_arguments"
    assert body["field"] == field, body
    assert not Schedule.objects.exists()


def test_a_sync_task_is_refused_with_the_reason(client) -> None:
    body = expect(send(client, "POST", "/schedules", {**BODY, "task": "echo"}), 422)
    assert "sync task" in body["message"] and "execution_mode='async'" in body["message"]


def test_conflicts_and_unknown_names(client) -> None:
    expect(send(client, "POST", "/schedules", BODY), 201)
    assert expect(send(client, "POST", "/schedules", BODY), 409)["error"] == "conflict"
    for method, path in [("GET", "/schedules/nope"), ("PATCH", "/schedules/nope"), ("DELETE", "/schedules/nope"),
                         ("POST", "/schedules/nope/pause"), ("POST", "/schedules/nope/resume"),
                         ("POST", "/schedules/nope/run"), ("GET", "/schedules/nope/fires")]:
        body = expect(send(client, method, path, {} if method == "PATCH" else None), 404)
        assert body["error"] == "not_found" and "nope" in body["message"]
    assert expect(send(client, "PATCH", "/schedules/nightly-adds", {"name": "renamed"}), 422)["field"] == "name"


def test_only_admin_tokens_manage_schedules(client, settings) -> None:
    settings.NEUTRINO_ALLOW_ANONYMOUS = False
    _, plain = token_create(name="plain", allowed_tasks=["wk_add"])
    _, boss = token_create(name="boss", admin=True)
    expect(send(client, "GET", "/schedules"), 401)
    refused = expect(send(client, "POST", "/schedules", BODY, token=plain), 403)
    assert "admin token" in refused["message"]
    expect(send(client, "GET", "/schedules", token=plain), 403)
    created = expect(send(client, "POST", "/schedules", BODY, token=boss), 201)
    assert created["created_by"] == "token:boss"
    expect(send(client, "POST", "/schedules/nightly-adds/run", token=plain), 403)
    assert not ScheduleFire.objects.exists()


def test_the_schedules_api_is_documented(client) -> None:
    schema = client.get("/api/openapi.json").json()
    assert {"/schedules", "/schedules/{name}", "/schedules/{name}/pause", "/schedules/{name}/resume",
            "/schedules/{name}/run", "/schedules/{name}/fires"} <= set(schema["paths"])


def test_every_schedule_change_and_a_task_run_now_are_in_the_audit_trail(client, private_nats, default_pools,
                                                                         ledger_flush) -> None:
    from tasks_app.operator_models import AuditRecord

    expect(send(client, "POST", "/schedules", BODY), 201)
    expect(send(client, "PATCH", "/schedules/nightly-adds", {"missed": "all"}), 200)
    expect(send(client, "POST", "/schedules/nightly-adds/pause"), 200)
    expect(send(client, "POST", "/schedules/nightly-adds/resume"), 200)
    run = expect(send(client, "POST", "/schedules/nightly-adds/run"), 202)
    expect(send(client, "DELETE", "/schedules/nightly-adds"), 200)
    delayed = expect(send(client, "POST", "/api/wk_add", {"args": {"a": 1, "b": 1}, "delay_s": 3600}), 202)
    expect(send(client, "POST", f"/tasks/{delayed['task_id']}/run-now"), 200)
    records = list(AuditRecord.objects.order_by("id"))
    assert [r.action for r in records] == ["schedule.create", "schedule.update", "schedule.pause",
                                           "schedule.resume", "schedule.run_now", "schedule.delete", "task.run_now"]
    assert all(r.actor == "anonymous" for r in records)
    update = records[1]
    assert (update.before["missed"], update.after["missed"]) == ("once", "all")
    assert records[4].after == {"task_id": run["task_id"]}
    assert records[5].before["function_name"] == "wk_add"
    assert (records[6].object_id, records[6].before["status"]) == (delayed["task_id"], "scheduled")
