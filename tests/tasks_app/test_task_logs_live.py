"""Task logs of sync tasks through a live `neutrino serve`: captured in its children, stored by its ledger
writer, read back with `GET /tasks/<id>/logs` and the Python client. Real processes, real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from neutrino import NeutrinoClient
from neutrino.client import TaskLog, TaskTimeout, ValidationError
from neutrino.client.errors import TaskNotFound
from tests.servers import http_server, neutrino, server_env, wait_for

pytestmark = pytest.mark.timeout(120)

CAP = 200_000


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("logs-live")
    with server_env(tmp, NEUTRINO_TASK_MODULES="tests.fixtures.log_tasks", NEUTRINO_LOG_MAX_BYTES=str(CAP),
                    NEUTRINO_SYNC_PROCESSES="2") as env:
        assert neutrino("manage", "migrate", "-v0", env=env).returncode == 0
        with http_server(env) as port:
            yield f"http://127.0.0.1:{port}"


@pytest.fixture
def client(base_url: str) -> Iterator[NeutrinoClient]:
    with NeutrinoClient(base_url, timeout=30) as neutrino_client:
        yield neutrino_client


def logs_when_complete(client: NeutrinoClient, task_id: str, last_text: str) -> TaskLog:
    """The sync row and its log are written by the server's ledger within moments of the answer."""
    return wait_for(lambda: (log := client.logs(task_id)) and last_text in log.text and log,
                    timeout_s=10, what=f"the log of {task_id} to hold {last_text!r}")


def test_everything_a_sync_task_writes_is_in_its_log(client: NeutrinoClient) -> None:
    handle = client.call_async("log_everything_sync", tag="s1")
    log = logs_when_complete(client, handle.id, "s1 without a newline")
    assert log.attempt == 1 and log.attempts == [1] and log.dropped_bytes == 0
    streams = {line.text.split("\n")[0]: (line.stream, line.level) for line in log.lines}
    assert streams["s1 printed"] == ("stdout", "INFO")
    assert streams["s1 to stderr"] == ("stderr", "ERROR")
    assert streams["log_tests: s1 logged at info"] == ("logging", "INFO")
    assert streams["log_tests: s1 logged with a traceback"] == ("logging", "ERROR")
    assert streams["s1 via neutrino.log step=3"] == ("neutrino", "WARNING")
    assert streams["s1 straight to fd 1"] == ("raw", "INFO")
    assert streams["s1 from a subprocess"] == ("raw", "INFO")
    times = [line.ts for line in log.lines if line.stream != "raw"]
    assert times == sorted(times)


def test_lines_before_a_timeout_kill_are_kept(client: NeutrinoClient) -> None:
    with pytest.raises(TaskTimeout) as caught:
        client.call_sync("log_then_hang_sync", tag="hang")
    task_id = caught.value.task_id
    assert task_id
    log = logs_when_complete(client, task_id, "hang line 2")
    assert [line.text for line in log.lines] == ["hang line 0", "hang line 1", "hang line 2"]


def test_the_cap_keeps_the_first_bytes_and_says_what_it_left_out(client: NeutrinoClient) -> None:
    handle = client.call_async("log_flood", megabytes=1.0)
    log = wait_for(lambda: (log := client.logs(handle.id)) and log.dropped_bytes and log, timeout_s=10,
                   what="the flood's log")
    kept_text = sum(len(line.text) + 1 for line in log.lines[:-1])  # the records' own headers come on top
    assert CAP * 0.7 < kept_text < CAP
    assert log.dropped_bytes >= 1_000_000 - CAP
    assert log.lines[-1].stream == "neutrino" and "more not kept" in log.lines[-1].text
    assert "the last line" not in log.text


def test_the_endpoint_answers_json_lines_or_text_and_refuses_what_it_cannot_answer(
        client: NeutrinoClient, base_url: str) -> None:
    handle = client.call_async("log_lines", count=3)
    logs_when_complete(client, handle.id, "2 ")
    with httpx.Client(base_url=base_url, timeout=30) as http:
        jsonl = http.get(f"/tasks/{handle.id}/logs")
        assert jsonl.status_code == 200 and jsonl.headers["content-type"] == "application/x-ndjson"
        items = [json.loads(line) for line in jsonl.text.splitlines()]
        assert [item["text"] for item in items] == [f"{i} {'x' * 60}" for i in range(3)]
        assert set(items[0]) == {"ts", "level", "stream", "text"}
        assert jsonl.headers["x-neutrino-attempt"] == "1"
        text = http.get(f"/tasks/{handle.id}/logs", params={"format": "text"})
        assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
        assert text.text.splitlines()[0].endswith(f"Z INFO stdout 0 {'x' * 60}")
        assert http.get(f"/tasks/{handle.id}/logs", params={"format": "xml"}).status_code == 422
        wrong = http.get(f"/tasks/{handle.id}/logs", params={"attempt": 2})
        assert wrong.status_code == 422 and "attempt" in wrong.text
    with pytest.raises(ValidationError):
        client.logs(handle.id, attempt=2)
    with pytest.raises(TaskNotFound):
        client.logs("00000000-0000-4000-8000-000000000000")


def test_a_task_that_writes_nothing_has_an_empty_log(client: NeutrinoClient) -> None:
    handle = client.call_async("log_lines", count=0)
    assert client.get_task(handle.id).status == "completed"
    log = client.logs(handle.id)
    assert log.lines == [] and log.dropped_bytes == 0 and log.attempts == []
