"""The polling API: one task, pages newest first, filters, cancel and retry of sync rows."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tasks_app.models import ANONYMOUS, Task

pytestmark = pytest.mark.django_db(transaction=True)


def make_rows(count: int, **fields) -> list[Task]:
    """Rows as the tests' anonymous caller would have made them (anonymous callers see only those)."""
    base = timezone.now()
    rows = [
        Task(
            function_name=fields.get("function_name", "add"),
            status=fields.get("status", "completed"),
            pool=fields.get("pool", "fast"),
            execution_mode=fields.get("execution_mode", "sync"),
            created_at=base - timedelta(seconds=i),
            timeout_ms=5000,
            args={"i": i},
            created_by=ANONYMOUS,
        )
        for i in range(count)
    ]
    Task.objects.bulk_create(rows)
    return rows


def test_get_one_task(client) -> None:
    (row,) = make_rows(1)
    body = client.get(f"/tasks/{row.id}").json()
    assert body["task_id"] == str(row.id) and body["status"] == "completed" and body["args"] == {"i": 0}


def test_unknown_and_malformed_ids_are_404_with_a_message(client) -> None:
    assert client.get(f"/tasks/{uuid.uuid4()}").status_code == 404
    response = client.get("/tasks/not-a-uuid")
    assert response.status_code == 404 and "UUID" in response.json()["message"]


def test_list_is_newest_first_with_keyset_pagination(client) -> None:
    make_rows(25)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        url = "/tasks?limit=10" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url).json()
        seen += [item["task_id"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if not cursor:
            break
    expected = [str(t.id) for t in Task.objects.order_by("-created_at", "-id")]
    assert seen == expected and pages == 3 and len(set(seen)) == 25


def test_filters_by_status_function_and_pool(client) -> None:
    make_rows(3, status="failed", function_name="boom")
    make_rows(2, status="completed", function_name="add")
    make_rows(4, status="queued", function_name="generate_report", pool="async", execution_mode="async")
    assert len(client.get("/tasks?status=failed").json()["items"]) == 3
    assert len(client.get("/tasks?function=add").json()["items"]) == 2
    assert len(client.get("/tasks?pool=async").json()["items"]) == 4
    assert len(client.get("/tasks?pool=async&status=failed").json()["items"]) == 0


def test_bad_filters_and_cursor_are_4xx(client) -> None:
    assert client.get("/tasks?status=exploded").status_code == 400
    assert client.get("/tasks?cursor=%%%").status_code == 400
    assert client.get("/tasks?limit=abc").status_code == 422


def test_cancel_of_a_finished_task_is_409(client) -> None:
    (row,) = make_rows(1)
    response = client.delete(f"/tasks/{row.id}")
    assert response.status_code == 409 and "completed" in response.json()["message"]
    assert Task.objects.get(id=row.id).status == "completed"


def test_retry_of_a_sync_row_runs_it_again_as_a_new_task(client, ledger_flush) -> None:
    first = client.post("/api/add", {"args": {"a": 20, "b": 22}}, content_type="application/json").json()
    ledger_flush()
    response = client.post(f"/tasks/{first['task_id']}/retry", content_type="application/json")
    assert response.status_code == 200
    body = response.json()
    assert body["task_id"] != first["task_id"] and body["retry_of"] == first["task_id"] and body["result"] == 42
    ledger_flush()
    assert str(Task.objects.get(id=body["task_id"]).retry_of_id) == first["task_id"]


def test_history_survives_a_restart_because_it_is_in_the_database(client) -> None:
    (row,) = make_rows(1)
    from django.db import connection

    connection.close()  # a new connection, as a restarted server would open
    assert client.get(f"/tasks/{row.id}").json()["status"] == "completed"


def test_wait_returns_at_once_for_a_finished_task_and_validates_its_range(client) -> None:
    (row,) = make_rows(1)
    assert client.get(f"/tasks/{row.id}?wait=30").json()["status"] == "completed"
    assert client.get(f"/tasks/{row.id}?wait=1000").status_code == 422


def make_big_rows(count: int, size: int) -> None:
    """`count` failed rows whose args, result and traceback each hold `size` characters."""
    base = timezone.now()
    blob = "x" * size
    Task.objects.bulk_create(
        Task(function_name="big", status="failed", pool="fast", execution_mode="sync", timeout_ms=5000,
             created_at=base - timedelta(seconds=i), args={"blob": blob}, result=blob, traceback=blob, error="e",
             created_by=ANONYMOUS)
        for i in range(count)
    )


def reads_of(queries: CaptureQueriesContext, column: str) -> list[str]:
    table = Task._meta.db_table
    return [q["sql"] for q in queries.captured_queries if f'"{table}"."{column}"' in q["sql"]]


def test_a_list_of_big_rows_reads_no_args_result_or_traceback_and_answers_at_most_100(client) -> None:
    make_big_rows(130, 30_000)  # 130 rows of 90 KB: the page would be 9 MB if it read them
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/tasks?limit=1000")
    assert response.status_code == 200
    body = response.json()
    assert len(body["items"]) == 100 and body["next_cursor"], "a bigger limit gets 100 and a cursor"
    assert len(response.content) < 100 * 2_000, "items carry metadata only"
    assert all(not {"args", "result", "traceback"} & item.keys() for item in body["items"])
    assert body["items"][0]["error"] == "e" and body["items"][0]["status"] == "failed"
    for column in ("args", "result", "traceback"):
        assert reads_of(queries, column) == [], f"the list read {column}"
    assert len(reads_of(queries, "id")) == 1, "one query for the page, none per row"
    rest = client.get(f"/tasks?limit=100&cursor={body['next_cursor']}").json()
    assert len(rest["items"]) == 30 and rest["next_cursor"] is None


def test_fields_asks_for_args_result_or_traceback_and_names_unknown_ones(client) -> None:
    make_big_rows(3, 10)
    items = client.get("/tasks?fields=result").json()["items"]
    assert [item["result"] for item in items] == ["x" * 10] * 3
    assert all("args" not in item and "traceback" not in item for item in items)
    (item,) = client.get("/tasks?limit=1&fields=args,result,traceback").json()["items"]
    assert (item["args"], item["result"], item["traceback"]) == ({"blob": "x" * 10}, "x" * 10, "x" * 10)
    response = client.get("/tasks?fields=result,secret_key,password")
    assert response.status_code == 422
    message = response.json()["message"]
    assert "'password'" in message and "'secret_key'" in message and "args, result, traceback" in message
    one = client.get(f"/tasks/{item['task_id']}").json()
    assert one["result"] == "x" * 10 and one["args"] == {"blob": "x" * 10}, "one task shows everything"
