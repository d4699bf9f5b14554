"""The sync path through the HTTP API: answers, every error code, and the ledger rows behind them."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from neutrino_site.process import http_ports
from tasks_app.models import Task

pytestmark = pytest.mark.django_db(transaction=True)


def call(client, name: str, args: dict | None = None, **extra):
    body = {} if args is None else {"args": args}
    return client.post(f"/api/{name}", body, content_type="application/json", **extra)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sync_call_answers_with_result_and_writes_a_completed_row(client, ledger_flush) -> None:
    response = call(client, "add", {"a": 1, "b": 2})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "completed" and body["result"] == 3 and body["duration_ms"] >= 0
    ledger_flush()
    row = Task.objects.get(id=body["task_id"])
    assert (row.status, row.function_name, row.pool, row.execution_mode) == ("completed", "add", "fast", "sync")
    assert row.result == 3 and row.args == {"a": 1, "b": 2}
    assert row.started_at and row.completed_at and row.duration_ms is not None
    host, pid = row.worker_id.rsplit(":", 1)
    assert host and int(pid) != os.getpid(), "the task runs in a child process, not the server"


def test_async_def_task_runs(client) -> None:
    response = call(client, "async_add", {"a": 2, "b": 5})
    assert response.status_code == 200 and response.json()["result"] == 7


def test_unknown_task_is_404_with_the_registered_names(client) -> None:
    response = call(client, "nope", {})
    assert response.status_code == 404
    body = response.json()
    assert body["error"] == "not_found" and "nope" in body["message"] and "add" in body["message"]


def test_bad_argument_is_422_naming_the_field(client) -> None:
    response = call(client, "add", {"a": "x", "b": 2})
    assert response.status_code == 422
    body = response.json()
    assert [f["field"] for f in body["fields"]] == ["a"]
    assert "a:" in body["message"]


@pytest.mark.parametrize(
    ("args", "field"),
    [({"b": 2}, "a"), ({"a": 1, "b": 2, "c": 3}, "c")],
)
def test_missing_and_unknown_arguments_are_422(client, args, field) -> None:
    response = call(client, "add", args)
    assert response.status_code == 422
    assert field in [f["field"] for f in response.json()["fields"]]


def test_rejected_calls_write_no_row(client, ledger_flush) -> None:
    call(client, "add", {"a": "x", "b": 1})
    call(client, "nope", {})
    ledger_flush()
    assert Task.objects.count() == 0


def test_the_gateway_view_refuses_a_declared_body_over_the_limit_without_reading_it(client) -> None:
    """The view's own check, for whatever server is in front of it. (A real server's front door answers
    such a request before the view sees it: tests/neutrino_site/test_front_door.py.)

    The head declares 1 GB and a few bytes follow. Had a middleware or the view read the body, the test
    client's input would have refused to give more than it holds, or Django would have answered 400 for a
    body over DATA_UPLOAD_MAX_MEMORY_SIZE; the 413 naming the declared size comes from the length alone.
    """
    from tasks_app.core.conf import neutrino_settings

    limit = neutrino_settings().max_payload_bytes
    declared = 1_000_000_000
    response = client.post("/api/echo", '{"args": {"value": 1}}', content_type="application/json",
                           CONTENT_LENGTH=str(declared))
    assert response.status_code == 413, response.content
    assert response.json()["message"] == (
        f"request body is {declared} bytes; the limit is {limit} bytes (NEUTRINO_MAX_PAYLOAD_BYTES)")


def test_malformed_json_and_wrong_shapes_are_4xx(client) -> None:
    assert client.post("/api/add", "{not json", content_type="application/json").status_code == 400
    assert client.post("/api/add", "[1, 2]", content_type="application/json").status_code == 400
    assert client.post("/api/add", '{"args": [1, 2]}', content_type="application/json").status_code == 422
    assert client.post("/api/add", "a=1", content_type="application/x-www-form-urlencoded").status_code == 415


def test_task_that_raises_is_500_with_error_type_and_task_id(client, ledger_flush) -> None:
    response = call(client, "boom", {"message": "disk on fire"})
    assert response.status_code == 500
    body = response.json()
    assert body["error_type"] == "ValueError" and "disk on fire" in body["message"]
    ledger_flush()
    row = Task.objects.get(id=body["task_id"])
    assert row.status == "failed" and row.error_type == "ValueError"
    assert "disk on fire" in row.error and "raise ValueError" in row.traceback


def test_timeout_is_504_and_the_child_is_killed(client, ledger_flush) -> None:
    pids_before = set(http_ports().runner.child_pids())
    response = call(client, "sleepy", {"seconds": 30})
    assert response.status_code == 504
    body = response.json()
    assert body["timeout_ms"] == 300 and body["task_id"]
    ledger_flush()
    row = Task.objects.get(id=body["task_id"])
    assert row.status == "failed" and row.error_type == "TimeoutError"
    killed_pid = int(row.worker_id.rsplit(":", 1)[1])
    assert killed_pid in pids_before
    deadline = time.monotonic() + 5
    while pid_alive(killed_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(killed_pid), "the timed-out child must be gone"
    assert call(client, "add", {"a": 1, "b": 1}).json()["result"] == 2


def test_crash_fails_the_call_and_the_pool_heals(client, ledger_flush) -> None:
    response = call(client, "crash", {"code": 7})
    assert response.status_code == 500
    body = response.json()
    assert body["error_type"] == "WorkerCrashed" and "7" in body["message"]
    for _ in range(4):  # more calls than children: every child answers
        assert call(client, "add", {"a": 2, "b": 2}).json()["result"] == 4
    ledger_flush()
    assert Task.objects.get(id=body["task_id"]).status == "failed"


def test_result_that_is_not_json_fails_with_a_message(client) -> None:
    response = call(client, "not_json")
    assert response.status_code == 500
    assert response.json()["error_type"] == "ResultError"
    assert "JSON" in response.json()["message"]


def test_result_over_the_size_limit_fails_with_a_message(client) -> None:
    from tasks_app.core.conf import neutrino_settings

    response = call(client, "big_result", {"size": neutrino_settings().max_payload_bytes + 100})
    assert response.status_code == 500
    assert response.json()["error_type"] == "ResultError"


def test_async_task_without_nats_is_503_with_a_message(client, settings, default_pools) -> None:
    settings.NEUTRINO_NATS_URL = ""
    response = call(client, "generate_report", {"dataset": "q3"})
    assert response.status_code == 503
    assert "NATS" in response.json()["message"]


def test_progress_reported_inside_a_sync_task_reaches_the_row(client, ledger_flush) -> None:
    response = call(client, "with_progress", {"steps": 4})
    assert response.status_code == 200
    ledger_flush()
    row = Task.objects.get(id=response.json()["task_id"])
    assert row.progress == 1.0 and row.progress_message == "step 4 of 4"


@pytest.mark.parametrize("raw", ["١٢٣", "²", "\N{MATHEMATICAL BOLD DIGIT NINE}", "0", "abc", "9" * 5000])
def test_a_timeout_header_that_is_not_a_positive_ascii_number_is_400(client, ledger_flush, raw) -> None:
    response = call(client, "echo", {"value": 1}, headers={"X-Neutrino-Timeout-Ms": raw})
    assert response.status_code == 400, response.content
    assert "X-Neutrino-Timeout-Ms" in response.json()["message"]
    assert call(client, "echo", {"value": 1}, headers={"X-Neutrino-Timeout-Ms": "250"}).status_code == 200
    ledger_flush()


def test_nul_in_a_result_error_traceback_or_progress_costs_no_row_of_its_batch(client, ledger_flush,
                                                                                monkeypatch) -> None:
    from tasks_app.adapters import ledger as ledger_module

    batches: list[set[str]] = []
    ledger = http_ports().ledger
    ledger.flush()
    # A long linger puts every call below in one batch; the hook sees what each write wrote.
    monkeypatch.setattr(ledger_module, "BATCH_LINGER_S", 3.0)
    ledger.on_written.append(lambda rows: batches.append({str(row["task_id"]) for row in rows}))
    try:
        answers = [call(client, "echo", {"value": n}) for n in range(3)]
        answers += [call(client, "nul_result"), call(client, "nul_error"), call(client, "nul_progress")]
        answers += [call(client, "echo", {"value": 3})]
        ledger_flush()
    finally:
        ledger.on_written.pop()
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 500, 200, 200]
    ids = [a.json()["task_id"] for a in answers]
    assert any(set(ids) <= batch for batch in batches), f"not one batch: {batches}"

    rows = {str(row.id): row for row in Task.objects.filter(id__in=ids)}
    assert len(rows) == 7, "every row of the batch landed"
    good, result, error, progress = rows[ids[0]], rows[ids[3]], rows[ids[4]], rows[ids[5]]
    assert (good.status, good.result) == ("completed", 0) and rows[ids[6]].result == 3
    # Stored escaped: the six characters \u0000 (and \ud800) where the task had the character.
    assert result.result == {"text": "before\\u0000after", "key\\u0000": ["\\u0000"]}
    assert error.status == "failed" and "bad\\u0000byte \\ud800" in error.error
    assert "\x00" not in error.traceback and "bad\\u0000byte" in error.traceback
    assert progress.progress_message == "half\\u0000way" and progress.result == "done"
    # The caller got the result as the task returned it; GET shows the stored copy.
    assert answers[3].json()["result"]["text"] == "before\x00after"
    assert client.get(f"/tasks/{ids[3]}").json()["result"]["text"] == "before\\u0000after"


def _run_and_cancel_through_nats(client, nats_url: str, *, mark_row: bool) -> tuple[Any, list[str]]:
    """Run a 1 s sync task in this process; while it runs, publish a cancel for it on NATS, as another server
    process would (after marking the row cancelled when `mark_row`). Returns the answer and the errors logged."""
    import asyncio
    import logging
    import threading

    import nats

    from workers.engine.topology import CANCEL_SUBJECT

    ports = http_ports()  # connected to NATS: it subscribes to the cancel subject
    errors: list[str] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = lambda record: errors.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("neutrino").addHandler(handler)
    answers: list = []
    caller = threading.Thread(target=lambda: answers.append(call(client, "pid_then_sleep", {"seconds": 1})))
    caller.start()
    try:
        deadline = time.monotonic() + 5
        while not ports.runner.running() and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.01)
        running = list(ports.runner.running())  # type: ignore[union-attr]
        assert running, "the sync task did not start"
        if mark_row:
            assert ports.ledger.flush(timeout_s=5)
            assert Task.objects.filter(id=running[0]).update(cancel_requested=True) == 1

        async def publish() -> None:
            nc = await nats.connect(nats_url)
            await nc.publish(CANCEL_SUBJECT, f'{{"task_id": "{running[0]}"}}'.encode())
            await nc.flush()
            await nc.close()

        asyncio.run(publish())
        caller.join(10)
    finally:
        logging.getLogger("neutrino").removeHandler(handler)
    assert answers, "the call did not answer"
    return answers[0], errors


def test_a_forged_cancel_message_does_not_kill_a_running_sync_task(client, live_nats) -> None:
    """The gateway kills a child only for a cancel its row records, not for any message on the subject."""
    answer, errors = _run_and_cancel_through_nats(client, live_nats.url, mark_row=False)
    assert answer.status_code == 200, answer.content
    assert isinstance(answer.json()["result"], int)
    assert not errors, errors


def test_a_cancel_from_another_process_kills_the_sync_child_its_row_names(client, live_nats) -> None:
    answer, errors = _run_and_cancel_through_nats(client, live_nats.url, mark_row=True)
    assert answer.status_code == 409, answer.content
    assert answer.json()["error_type"] == "Cancelled"
    assert not errors, errors


def test_a_lone_surrogate_in_a_result_is_answered_as_its_json_escape(client, ledger_flush) -> None:
    response = call(client, "lone_surrogate")
    assert response.status_code == 200, response.content
    assert b"\\ud800" in response.content and "é".encode() in response.content
    assert response.json()["result"] == {"text": "half of a pair: \ud800", "ok": "é"}
    ledger_flush()
    assert Task.objects.get(id=response.json()["task_id"]).status == "completed"
