"""The API as a network service: tokens, idempotency, bulk submit, backpressure, rate limits, bad input.

Through Django's test client in this process; queued tasks go to a real nats-server of the test's own.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from pools_app.models import Pool
from pools_app.selectors import forget_cached_pools
from tasks_app.models import ApiToken, Task
from tasks_app.services.tokens import token_create, token_revoke

pytestmark = pytest.mark.django_db(transaction=True)


def post(client, path: str, body: object = None, *, token: str | None = None, key: str | None = None,
         raw: str | None = None, content_type: str = "application/json"):
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if key:
        headers["Idempotency-Key"] = key
    data = raw if raw is not None else json.dumps(body if body is not None else {})
    return client.post(path, data, content_type=content_type, headers=headers)


def get(client, path: str, *, token: str | None = None, **params):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.get(path, params, headers=headers)


def assert_error(response, status: int, *words: str) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:500])
    body = response.json()
    assert body["error"] and body["message"], body
    for word in words:
        assert word in body["message"], (word, body["message"])
    return body


@pytest.fixture
def tokens_required(neutrino_conf):
    neutrino_conf(ALLOW_ANONYMOUS=False)


@pytest.fixture
def pools(default_pools):
    return default_pools


# --- tokens ----------------------------------------------------------------------------------------


def test_anonymous_calls_are_401_with_what_to_send(client, tokens_required) -> None:
    for response in (post(client, "/api/add", {"args": {"a": 1, "b": 2}}), get(client, "/tasks"),
                     get(client, f"/tasks/{uuid.uuid4()}")):
        body = assert_error(response, 401, "Authorization: Bearer", "neutrino token create")
        assert body["error"] == "unauthorized"
        assert response["WWW-Authenticate"].startswith("Bearer")
    assert Task.objects.count() == 0


def test_a_token_opens_the_api_and_records_its_last_use_at_most_once_a_minute(client, tokens_required,
                                                                              ledger_flush) -> None:
    token, plaintext = token_create(name="ci")
    assert plaintext.startswith("ntr_") and token.prefix == plaintext[:12]
    assert plaintext not in {token.secret_hash, token.prefix}, "the secret itself is never stored"
    response = post(client, "/api/add", {"args": {"a": 1, "b": 2}}, token=plaintext)
    assert response.status_code == 200 and response.json()["result"] == 3
    first_use = ApiToken.objects.get(id=token.id).last_used_at
    assert first_use is not None
    assert get(client, "/tasks", token=plaintext).status_code == 200
    assert ApiToken.objects.get(id=token.id).last_used_at == first_use, "no write per request"
    ApiToken.objects.filter(id=token.id).update(last_used_at=first_use - timedelta(minutes=2))
    assert get(client, "/tasks", token=plaintext).status_code == 200
    assert ApiToken.objects.get(id=token.id).last_used_at > first_use


def test_revoked_unknown_and_malformed_tokens_are_401(client, tokens_required) -> None:
    _, plaintext = token_create(name="to-revoke")
    assert get(client, "/tasks", token=plaintext).status_code == 200
    token_revoke(name_or_prefix="to-revoke")
    assert_error(get(client, "/tasks", token=plaintext), 401, "revoked")
    assert_error(get(client, "/tasks", token="ntr_not-a-real-token"), 401, "not valid")
    response = client.get("/tasks", headers={"Authorization": plaintext})  # no "Bearer "
    body = assert_error(response, 401, "Bearer")
    assert plaintext not in json.dumps(body), "a secret sent the wrong way is never echoed"


def test_a_bad_token_is_refused_even_where_anonymous_calls_are_allowed(client, neutrino_conf) -> None:
    neutrino_conf(ALLOW_ANONYMOUS=True)
    assert get(client, "/tasks").status_code == 200
    assert_error(get(client, "/tasks", token="ntr_wrong"), 401)


def test_anonymous_calls_are_taken_from_loopback_addresses_only(client, neutrino_conf) -> None:
    neutrino_conf(ALLOW_ANONYMOUS=True)
    for address in ("127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"):
        assert client.get("/tasks", REMOTE_ADDR=address).status_code == 200, address
    for address in ("10.0.0.9", "192.0.2.2", "::ffff:10.0.0.9", "fd00::2", "unknown", ""):
        body = assert_error(client.get("/tasks", REMOTE_ADDR=address), 401, "from this machine only",
                            "Authorization: Bearer")
        assert body["error"] == "unauthorized", address
    _, plaintext = token_create(name="remote")
    assert client.get("/tasks", REMOTE_ADDR="10.0.0.9", headers={"Authorization": f"Bearer {plaintext}"}
                      ).status_code == 200


def test_token_names_are_unique_among_live_tokens(tokens_required) -> None:
    from tasks_app.core.errors import Conflict

    token_create(name="svc")
    with pytest.raises(Conflict):
        token_create(name="svc")
    token_revoke(name_or_prefix="svc")
    token_create(name="svc")  # a revoked token's name is free again
    assert ApiToken.objects.filter(name="svc").count() == 2


def test_tokens_are_created_in_the_admin_shown_once_and_revoked_there(admin_client, client, tokens_required) -> None:
    response = admin_client.post("/admin/tasks_app/apitoken/add/", {"name": "from-admin"}, follow=True)
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    plaintext = next(word for m in shown for word in m.split() if word.startswith("ntr_"))
    token = ApiToken.objects.get(name="from-admin")
    assert token.secret_hash != plaintext and token.prefix == plaintext[:12]
    assert get(client, "/tasks", token=plaintext).status_code == 200
    page = admin_client.get(f"/admin/tasks_app/apitoken/{token.id}/change/").content.decode()
    assert plaintext not in page, "the secret is shown once, never again"
    admin_client.post("/admin/tasks_app/apitoken/", {"action": "revoke", "_selected_action": [token.id]})
    assert_error(get(client, "/tasks", token=plaintext), 401, "revoked")


def test_the_admin_gives_a_token_the_admin_scope_and_allowed_tasks(admin_client) -> None:
    response = admin_client.post("/admin/tasks_app/apitoken/add/",
                                 {"name": "scoped", "admin": "on", "tasks": " add, echo ,,"}, follow=True)
    assert response.status_code == 200
    token = ApiToken.objects.get(name="scoped")
    assert token.admin is True
    assert token.allowed_tasks == ["add", "echo"]
    page = admin_client.get(f"/admin/tasks_app/apitoken/{token.id}/change/").content.decode()
    assert "echo" in page, "the change page shows the allowed tasks"
    plain = admin_client.post("/admin/tasks_app/apitoken/add/", {"name": "plain"}, follow=True)
    assert plain.status_code == 200
    assert ApiToken.objects.get(name="plain").admin is False
    assert ApiToken.objects.get(name="plain").allowed_tasks == []


# --- idempotency -----------------------------------------------------------------------------------


def test_a_repeated_sync_call_answers_with_the_first_task(client, ledger_flush) -> None:
    key = str(uuid.uuid4())
    first = post(client, "/api/add", {"args": {"a": 2, "b": 3}}, key=key)
    again = post(client, "/api/add", {"args": {"a": 2, "b": 3}}, key=key)
    assert first.status_code == again.status_code == 200
    assert again.json()["task_id"] == first.json()["task_id"] and again.json()["result"] == 5
    assert again["Idempotent-Replayed"] == "true" and not first.has_header("Idempotent-Replayed")
    ledger_flush()
    assert Task.objects.filter(function_name="add").count() == 1, "no second row"
    assert Task.objects.get().status == "completed"


def test_a_repeated_failing_sync_call_replays_the_same_error(client, ledger_flush) -> None:
    key = str(uuid.uuid4())
    first = post(client, "/api/boom", {"args": {"message": "once"}}, key=key)
    ledger_flush()
    again = post(client, "/api/boom", {"args": {"message": "once"}}, key=key)
    assert first.status_code == again.status_code == 500
    assert again.json()["task_id"] == first.json()["task_id"] and "once" in again.json()["message"]
    assert Task.objects.count() == 1


def test_racing_repeats_of_a_sync_call_run_it_once(ledger_flush) -> None:
    """Two requests with one key at the same time: one runs the task, the other waits for its answer."""
    import threading

    from django.db import connection
    from django.test import Client

    key = str(uuid.uuid4())
    answers: list[dict] = []
    start = threading.Barrier(2)

    def call() -> None:
        try:
            start.wait(10)
            response = post(Client(), "/api/pid_then_sleep", {"args": {"seconds": 0.3}}, key=key)
            answers.append({**response.json(), "code": response.status_code})
        finally:
            connection.close()

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [a["code"] for a in answers] == [200, 200], answers
    assert answers[0]["task_id"] == answers[1]["task_id"] and answers[0]["result"] == answers[1]["result"]
    ledger_flush()
    assert Task.objects.count() == 1, "the task ran once"


def test_a_key_reused_for_another_call_is_409(client, ledger_flush) -> None:
    key = str(uuid.uuid4())
    assert post(client, "/api/add", {"args": {"a": 1, "b": 1}}, key=key).status_code == 200
    assert_error(post(client, "/api/add", {"args": {"a": 1, "b": 2}}, key=key), 409, "different call")
    assert_error(post(client, "/api/echo", {"args": {"value": 1}}, key=key), 409)
    ledger_flush()
    assert Task.objects.count() == 1


def test_a_repeated_async_submit_is_one_task_and_one_message(client, pools, private_nats, ledger_flush) -> None:
    key = str(uuid.uuid4())
    first = post(client, "/api/wk_add", {"args": {"a": 1, "b": 2}}, key=key)
    ledger_flush()  # the row says "queued" once the ledger wrote it
    again = post(client, "/api/wk_add", {"args": {"a": 1, "b": 2}}, key=key)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["task_id"] == first.json()["task_id"]
    assert again.json()["status"] == "queued" and again.json()["poll_url"] == f"/tasks/{first.json()['task_id']}"
    assert Task.objects.count() == 1 and private_nats.stream_messages() == 1


def test_keys_are_scoped_to_the_caller(client, tokens_required, ledger_flush) -> None:
    _, alice = token_create(name="alice")
    _, bob = token_create(name="bob")
    key = "shared-key"
    a = post(client, "/api/add", {"args": {"a": 1, "b": 1}}, key=key, token=alice).json()["task_id"]
    b = post(client, "/api/add", {"args": {"a": 1, "b": 1}}, key=key, token=bob).json()["task_id"]
    assert a != b
    ledger_flush()
    assert Task.objects.count() == 2


def test_a_key_older_than_the_ttl_makes_a_new_task(client, ledger_flush) -> None:
    key = str(uuid.uuid4())
    first = post(client, "/api/add", {"args": {"a": 1, "b": 1}}, key=key).json()["task_id"]
    ledger_flush()
    Task.objects.filter(id=first).update(created_at=timezone.now() - timedelta(hours=25))
    second = post(client, "/api/add", {"args": {"a": 1, "b": 1}}, key=key).json()["task_id"]
    assert second != first
    ledger_flush()
    assert Task.objects.get(id=first).idempotency_key is None, "the old task let go of its key"


@pytest.mark.parametrize("key", ["x" * 129, "caf\u00e9", " "])
def test_a_malformed_key_is_400(client, key) -> None:
    response = client.post("/api/add", {"args": {"a": 1, "b": 1}}, content_type="application/json",
                           headers={"Idempotency-Key": key})
    assert_error(response, 400, "Idempotency-Key")


def test_retry_with_a_key_makes_one_new_task(client, pools, private_nats) -> None:
    original = post(client, "/api/wk_add", {"args": {"a": 1, "b": 2}}).json()["task_id"]
    key = str(uuid.uuid4())
    first = client.post(f"/tasks/{original}/retry", content_type="application/json", headers={"Idempotency-Key": key})
    again = client.post(f"/tasks/{original}/retry", content_type="application/json", headers={"Idempotency-Key": key})
    assert first.status_code == 202 and again.json()["task_id"] == first.json()["task_id"]
    assert Task.objects.filter(retry_of=original).count() == 1


# --- bulk submit -----------------------------------------------------------------------------------


def test_batch_queues_every_item_and_answers_the_ids_in_order(client, pools, private_nats, ledger_flush) -> None:
    items = [{"args": {"n": i}} for i in range(50)]
    response = post(client, "/api/wk_noop/batch", {"items": items})
    assert response.status_code == 202, response.content
    answered = response.json()["items"]
    assert [item["status"] for item in answered] == ["queued"] * 50
    ledger_flush()  # as for a single submit, the rows follow the answer within one ledger batch
    rows = {str(t.id): t for t in Task.objects.all()}
    assert [rows[item["task_id"]].args for item in answered] == [{"n": i} for i in range(50)]
    assert all(t.status == "queued" and t.queued_at for t in rows.values())
    assert private_nats.stream_messages() == 50


def test_a_bad_item_is_422_naming_its_index_and_nothing_is_submitted(client, pools, private_nats) -> None:
    items = [{"args": {"n": 1}}, {"args": {"n": 2}}, {"args": {"n": "three"}}, {"args": {"n": 4}}]
    body = assert_error(post(client, "/api/wk_noop/batch", {"items": items}), 422, "item 2", "nothing was submitted")
    assert body["index"] == 2 and body["fields"][0]["field"] == "items.2.args.n"
    assert Task.objects.count() == 0 and private_nats.stream_messages() == 0


def test_batch_limits(client, pools, private_nats, neutrino_conf) -> None:
    neutrino_conf(BATCH_MAX=3)
    assert_error(post(client, "/api/wk_noop/batch", {"items": [{"args": {}}] * 4}), 422, "at most 3")
    assert_error(post(client, "/api/wk_noop/batch", {"items": []}), 422, "empty")
    assert_error(post(client, "/api/wk_noop/batch", {"items": {"args": {}}}), 422, "items")
    assert_error(post(client, "/api/wk_noop/batch", {"items": [{"args": {}}], "extra": 1}), 422, "extra")
    assert_error(post(client, "/api/wk_noop/batch", {"items": [{"n": 1}]}), 422, "item 0")
    assert_error(post(client, "/api/add/batch", {"items": [{"args": {"a": 1, "b": 2}}]}), 422,
                 "batch is for queued tasks")
    assert_error(post(client, "/api/nope/batch", {"items": [{"args": {}}]}), 404)
    assert Task.objects.count() == 0


def test_a_repeated_batch_with_the_same_key_answers_the_same_ids(client, pools, private_nats) -> None:
    key = str(uuid.uuid4())
    items = [{"args": {"n": i}} for i in range(5)]
    first = post(client, "/api/wk_noop/batch", {"items": items}, key=key)
    again = post(client, "/api/wk_noop/batch", {"items": items}, key=key)
    assert first.status_code == 202 and again.status_code == 200
    assert [i["task_id"] for i in again.json()["items"]] == [i["task_id"] for i in first.json()["items"]]
    assert Task.objects.count() == 5 and private_nats.stream_messages() == 5
    assert_error(post(client, "/api/wk_noop/batch", {"items": items[:4]}, key=key), 409)


def test_a_batch_the_stream_does_not_store_stays_pending_for_the_sweeper(client, pools, private_nats) -> None:
    from workers.engine.topology import STREAM

    private_nats.run(lambda js: js.delete_stream(STREAM))
    response = post(client, "/api/wk_noop/batch", {"items": [{"args": {"n": i}} for i in range(3)]})
    assert response.status_code == 202, response.content
    assert [item["status"] for item in response.json()["items"]] == ["pending"] * 3
    rows = list(Task.objects.all())
    assert len(rows) == 3 and all(t.status == "pending" and "republished" in t.error for t in rows)


def test_batch_without_nats_is_503_and_writes_nothing(client, pools) -> None:
    assert_error(post(client, "/api/wk_noop/batch", {"items": [{"args": {}}]}), 503, "NATS")
    assert Task.objects.count() == 0


# --- backpressure and rate limits ------------------------------------------------------------------


def test_a_full_pool_answers_429_with_retry_after(client, pools, private_nats, ledger_flush) -> None:
    Pool.objects.filter(name="async").update(max_backlog=2)
    forget_cached_pools()
    assert post(client, "/api/wk_noop", {"args": {}}).status_code == 202
    assert post(client, "/api/wk_noop", {"args": {}}).status_code == 202
    response = post(client, "/api/wk_noop", {"args": {}})
    body = assert_error(response, 429, "pool async is full", "max_backlog 2")
    assert int(response["Retry-After"]) >= 1 and body["reason"] == "backlog"
    assert_error(post(client, "/api/wk_noop/batch", {"items": [{"args": {}}]}), 429)
    assert_error(post(client, "/api/wk_noop/batch", {"items": [{"args": {}}] * 3}), 422, "larger than")
    assert Task.objects.count() == 2 and private_nats.stream_messages() == 2, "refused submits leave no trace"
    assert post(client, "/api/add", {"args": {"a": 1, "b": 1}}).status_code == 200, "other pools are not held up"
    ledger_flush()
    key = str(uuid.uuid4())
    Task.objects.filter(status__in=["pending", "queued"]).update(status="completed")  # the workers caught up
    first = post(client, "/api/wk_noop", {"args": {"n": 1}}, key=key)
    post(client, "/api/wk_noop", {"args": {}})
    assert post(client, "/api/wk_noop", {"args": {}}).status_code == 429
    again = post(client, "/api/wk_noop", {"args": {"n": 1}}, key=key)
    assert again.status_code == 200 and again.json()["task_id"] == first.json()["task_id"], "a full pool replays"
    ledger_flush()
    Task.objects.filter(status__in=["pending", "queued"]).update(status="completed")
    assert post(client, "/api/wk_noop", {"args": {}}).status_code == 202


def test_the_rate_limit_is_per_token_with_retry_after(client, tokens_required, neutrino_conf) -> None:
    neutrino_conf(RATE_LIMIT_PER_S=0.01, RATE_LIMIT_BURST=2)
    _, first = token_create(name="first")
    _, second = token_create(name="second")
    assert get(client, "/tasks", token=first).status_code == 200
    assert get(client, "/tasks", token=first).status_code == 200
    response = get(client, "/tasks", token=first)
    body = assert_error(response, 429, "rate limit", "'first'")
    assert int(response["Retry-After"]) >= 1 and body["reason"] == "rate_limit"
    assert get(client, "/tasks", token=second).status_code == 200, "each token has its own bucket"


def test_anonymous_callers_are_rate_limited_by_address(client, neutrino_conf) -> None:
    neutrino_conf(ALLOW_ANONYMOUS=True, RATE_LIMIT_PER_S=0.01, RATE_LIMIT_BURST=1)
    assert get(client, "/tasks").status_code == 200
    assert_error(get(client, "/tasks"), 429, "anonymous caller 127.0.0.1")
    assert client.get("/tasks", REMOTE_ADDR="127.0.0.2").status_code == 200


# --- bad input: always a 4xx with a message --------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "status", "words"),
    [
        ("{not json", 400, ["not valid JSON"]),
        ('{"args": {"a": NaN, "b": 1}}', 400, ["NaN"]),
        ('{"args": {"a": 1e999, "b": 1}}', 400, ["64-bit float"]),
        ('{"args": {"a": ' + "9" * 5000 + ', "b": 1}}', 400, ["not valid JSON"]),
        ('{"args": {"value": ' + "[" * 100 + "]" * 100 + "}}", 400, ["deeper than 64"]),
        ('{"args": {"value": ' + "[" * 5000 + "]" * 5000 + "}}", 400, ["deeper than"]),
        ('{"args": {"value": "a\\u0000b"}}', 400, ["NUL"]),
        ('{"args": {"value": {"k\\u0000": 1}}}', 400, ["NUL"]),
        ('{"args": {"value": "\\ud800"}}', 400, ["surrogate"]),
        ('{"args": {"value": 1}, "kwargs": {}}', 422, ["unknown field"]),
        ('{"args": {"value": 1, "other": 2}}', 422, ["other"]),
        ('"just a string"', 400, ["JSON object"]),
        ("\xff\xfe", 400, ["not valid JSON"]),
    ],
)
def test_bad_bodies_are_4xx_with_a_message(client, raw, status, words, ledger_flush) -> None:
    assert_error(post(client, "/api/echo", raw=raw), status, *words)
    ledger_flush()
    assert Task.objects.count() == 0


def test_huge_but_finite_numbers_and_moderate_nesting_are_fine(client) -> None:
    big = 10**300
    response = post(client, "/api/echo", raw='{"args": {"value": [' + str(big) + ", 1.5e300, " + "[" * 30
                    + "]" * 30 + "]}}")
    assert response.status_code == 200, response.content
    assert response.json()["result"][0] == big


def test_wrong_content_type_and_bad_query_values_are_4xx(client) -> None:
    assert_error(post(client, "/api/add", raw="a=1", content_type="application/x-www-form-urlencoded"), 415,
                 "application/json")
    assert_error(client.get("/tasks/not-a-uuid"), 404, "UUID")
    assert_error(client.get(f"/tasks/{uuid.uuid4()}", {"wait": "soon"}), 422)
    assert_error(client.get(f"/tasks/{uuid.uuid4()}", {"wait": "1e999"}), 422)
    assert_error(client.get("/tasks", {"function": "a\x00b"}), 400, "NUL")
    assert_error(client.get("/tasks", {"limit": "many"}), 422)
    assert client.get("/tasks", {"limit": str(10**30)}).status_code == 200
    assert client.delete("/tasks/12345").status_code == 404
    assert client.post("/tasks/12345/retry", content_type="application/json").status_code == 404


# --- the OpenAPI document --------------------------------------------------------------------------


def test_every_operation_documents_its_statuses(client) -> None:
    schema = client.get("/api/openapi.json").json()
    assert schema["components"]["securitySchemes"], "bearer auth is documented"
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            assert {"401", "429"} <= statuses, (method, path, statuses)
            if method == "post":
                assert "400" in statuses, (method, path, statuses)
    queued = schema["paths"]["/api/wk_noop"]["post"]
    assert {"200", "202", "409", "413", "503"} <= set(queued["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in queued["parameters"])
    assert "/api/wk_noop/batch" in schema["paths"] and "/api/add/batch" not in schema["paths"]
    assert {"500", "504"} <= set(schema["paths"]["/api/add"]["post"]["responses"])
