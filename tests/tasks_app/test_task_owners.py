"""Tokens own their tasks: who created a task, who may see, cancel and retry it, which tasks a token may call.

Through Django's test client (the API as a caller meets it); queued tasks go to a real nats-server.
"""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from tasks_app.models import ApiToken, Task
from tasks_app.services.tokens import token_create

pytestmark = pytest.mark.django_db(transaction=True)


def call(client, method: str, path: str, token: str | None = None, body: object = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if method == "GET":
        return client.get(path, headers=headers)
    if method == "DELETE":
        return client.delete(path, headers=headers)
    return client.post(path, json.dumps(body if body is not None else {}), content_type="application/json",
                       headers=headers)


def listed(client, token: str | None = None) -> set[str]:
    response = call(client, "GET", "/tasks?limit=500", token)
    assert response.status_code == 200, response.content
    return {item["task_id"] for item in response.json()["items"]}


@pytest.fixture
def make_row():
    """Factory: a finished sync task row (fields override), as the ledger writes one."""
    def make(**fields) -> Task:
        row = {"function_name": "echo", "status": "completed", "pool": "fast", "execution_mode": "sync",
               "created_at": timezone.now(), "timeout_ms": 1000, "args": {}, "attempt": 1, **fields}
        return Task.objects.create(**row)

    return make


@pytest.fixture
def tokens():
    """Two plain tokens and an admin one: name -> plaintext."""
    return {name: token_create(name=name, admin=name == "boss")[1] for name in ("alice", "bob", "boss")}


def test_a_task_records_its_token_and_only_that_token_or_an_admin_sees_it(client, tokens, ledger_flush) -> None:
    response = call(client, "POST", "/api/echo", tokens["alice"], {"args": {"value": 1}})
    assert response.status_code == 200, response.content
    task_id = response.json()["task_id"]
    mine = call(client, "GET", f"/tasks/{task_id}", tokens["alice"])
    assert mine.status_code == 200 and mine.json()["created_by"] == "token:alice"
    ledger_flush()
    row = Task.objects.get(id=task_id)
    assert row.created_by == "token:alice" and row.created_by_token == ApiToken.objects.get(name="alice")

    other = call(client, "GET", f"/tasks/{task_id}", tokens["bob"])
    assert other.status_code == 404, "another token's task does not exist for it (its id reveals nothing)"
    assert call(client, "GET", f"/tasks/{task_id}?wait=1", tokens["bob"]).status_code == 404
    assert task_id in listed(client, tokens["alice"]) and task_id not in listed(client, tokens["bob"])
    assert call(client, "GET", f"/tasks/{task_id}", tokens["boss"]).status_code == 200
    assert task_id in listed(client, tokens["boss"])


def test_another_token_can_neither_cancel_nor_retry_a_task(client, tokens, make_row) -> None:
    alice = ApiToken.objects.get(name="alice")
    task = make_row(status="running", created_by="token:alice", created_by_token=alice)
    assert call(client, "POST", f"/tasks/{task.id}/retry", tokens["bob"]).status_code == 404
    assert call(client, "DELETE", f"/tasks/{task.id}", tokens["bob"]).status_code == 404
    assert Task.objects.get(id=task.id).status == "running" and Task.objects.count() == 1

    cancelled = call(client, "DELETE", f"/tasks/{task.id}", tokens["alice"])
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    retried = call(client, "POST", f"/tasks/{task.id}/retry", tokens["alice"])
    assert retried.status_code == 200, retried.content
    new = call(client, "GET", f"/tasks/{retried.json()['task_id']}", tokens["alice"])
    assert new.status_code == 200 and new.json()["created_by"] == "token:alice"


def test_an_admin_token_cancels_and_retries_any_task_and_owns_its_retry(client, tokens, make_row) -> None:
    alice = ApiToken.objects.get(name="alice")
    task = make_row(status="queued", pool="async", execution_mode="async", created_by="token:alice",
                    created_by_token=alice)
    assert call(client, "DELETE", f"/tasks/{task.id}", tokens["boss"]).json()["status"] == "cancelled"
    done = make_row(function_name="echo", created_by="token:alice", created_by_token=alice)
    retried = call(client, "POST", f"/tasks/{done.id}/retry", tokens["boss"])
    assert retried.status_code == 200, retried.content
    new = call(client, "GET", f"/tasks/{retried.json()['task_id']}", tokens["boss"]).json()
    assert new["created_by"] == "token:boss" and new["retry_of"] == str(done.id)


def test_a_new_token_with_a_revoked_tokens_name_does_not_inherit_its_tasks(client, tokens, make_row) -> None:
    from tasks_app.services.tokens import token_revoke

    old = ApiToken.objects.get(name="alice")
    task = make_row(created_by="token:alice", created_by_token=old)
    token_revoke(name_or_prefix="alice")
    _, again = token_create(name="alice")
    assert call(client, "GET", f"/tasks/{task.id}", again).status_code == 404
    assert task.id not in listed(client, again)


def test_a_token_limited_to_some_tasks_gets_403_for_others(client, make_row) -> None:
    _, limited = token_create(name="echoer", allowed_tasks=["echo", "noop"])
    assert call(client, "POST", "/api/echo", limited, {"args": {"value": 2}}).status_code == 200
    refused = call(client, "POST", "/api/boom", limited, {"args": {}})
    assert refused.status_code == 403
    body = refused.json()
    assert body["error"] == "forbidden" and "may not call 'boom'" in body["message"]
    assert "echo, noop" in body["message"]
    assert call(client, "POST", "/api/wk_noop/batch", limited, {"items": [{"args": {}}]}).status_code == 403
    assert not Task.objects.filter(function_name__in=["boom", "wk_noop"]).exists()

    # An admin token limited to some tasks sees every task but retries only those.
    _, admin_limited = token_create(name="ops", admin=True, allowed_tasks=["echo"])
    other = make_row(function_name="boom", created_by="token:someone")
    assert call(client, "GET", f"/tasks/{other.id}", admin_limited).status_code == 200
    retry = call(client, "POST", f"/tasks/{other.id}/retry", admin_limited)
    assert retry.status_code == 403 and "may not call 'boom'" in retry.json()["message"]
    assert Task.objects.filter(function_name="boom").count() == 1


def test_anonymous_callers_see_only_anonymous_tasks(client, tokens, neutrino_conf, make_row) -> None:
    neutrino_conf(ALLOW_ANONYMOUS=True)
    response = call(client, "POST", "/api/echo", None, {"args": {"value": 3}})
    assert response.status_code == 200
    anonymous_id = response.json()["task_id"]
    assert call(client, "GET", f"/tasks/{anonymous_id}").json()["created_by"] == "anonymous"
    tokens_task = make_row(created_by="token:alice", created_by_token=ApiToken.objects.get(name="alice"))
    older = make_row(created_by="")  # a row from before tasks recorded their creator
    assert call(client, "GET", f"/tasks/{tokens_task.id}").status_code == 404
    assert call(client, "GET", f"/tasks/{older.id}").status_code == 404
    assert call(client, "DELETE", f"/tasks/{tokens_task.id}").status_code == 404
    assert listed(client) == {anonymous_id}
    assert call(client, "GET", f"/tasks/{anonymous_id}", tokens["alice"]).status_code == 404
    assert anonymous_id in listed(client, tokens["boss"]) and str(older.id) in listed(client, tokens["boss"])


def test_a_batch_records_its_token_on_every_row(client, default_pools, private_nats, ledger_flush) -> None:
    _, plaintext = token_create(name="batcher")
    response = call(client, "POST", "/api/wk_noop/batch", plaintext, {"items": [{"args": {"n": i}} for i in range(5)]})
    assert response.status_code == 202, response.content
    ledger_flush()
    token = ApiToken.objects.get(name="batcher")
    rows = Task.objects.filter(id__in=[item["task_id"] for item in response.json()["items"]])
    assert {(t.created_by, t.created_by_token_id) for t in rows} == {("token:batcher", token.id)}
    assert len(rows) == 5


def test_tokens_that_existed_before_the_migration_become_admin_tokens() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate([("tasks_app", "0004_task_attempts")])
    old_state = executor.loader.project_state([("tasks_app", "0004_task_attempts")]).apps
    old_state.get_model("tasks_app", "ApiToken").objects.create(
        name="legacy", prefix="ntr_legacy", secret_hash="0" * 64, created_at=timezone.now())
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    legacy = ApiToken.objects.get(name="legacy")
    assert legacy.admin and legacy.allowed_tasks == []
    assert not token_create(name="new")[0].admin, "tokens made after it are not"
