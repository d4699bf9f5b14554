"""Long-polls against a real `neutrino serve` process: they cannot take the threads sync calls need.

200 callers each ask `GET /tasks/<id>?wait=10` on a task that never finishes (more than the 32 request
threads: today /healthz and sync calls then wait for a free thread, up to the whole wait). The process grants
NEUTRINO_LONG_POLL_MAX waits (2 per caller) and answers the rest at once, saying so in a header.
"""

from __future__ import annotations

import http.client
import json
import re
import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import http_server, neutrino, server_env

LONG_POLLS = 200
BOUND_S = 1.0

CREATE_TASK = """
import uuid
from django.utils import timezone
from tasks_app.models import ANONYMOUS, Task
task = Task.objects.create(id=uuid.uuid4(), function_name="add", status="queued", pool="async",
                           execution_mode="async", created_at=timezone.now(), timeout_ms=60000,
                           created_by=ANONYMOUS)
print(task.id)
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    tmp: Path = tmp_path_factory.mktemp("long-polls")
    with server_env(tmp, NEUTRINO_TASK_MODULES="examples.tasks", NEUTRINO_LONG_POLL_MAX="8",
                    NEUTRINO_LONG_POLL_PER_CALLER="2") as env:
        assert neutrino("manage", "migrate", "-v0", env=env).returncode == 0
        created = neutrino("manage", "shell", "-c", CREATE_TASK, env=env)
        assert created.returncode == 0, created.stderr
        with http_server(env, workers=1) as port:
            yield port, created.stdout.strip().splitlines()[-1]


def timed_call(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, float]:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, time.monotonic() - started


def answers_until_quiet(sockets: list[socket.socket], *, quiet_s: float) -> list[bytes]:
    """The first bytes each socket received, collected until none arrives for `quiet_s`."""
    answers = []
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        while events := selector.select(quiet_s):
            for key, _ in events:
                selector.unregister(key.fileobj)
                answers.append(whole_answer(key.fileobj))  # type: ignore[arg-type]
    return answers


def whole_answer(sock: socket.socket) -> bytes:
    """One HTTP answer: its head, then as much body as its Content-Length says."""
    data = sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)content-length: *(\d+)", head)
    while length and len(body) < int(length.group(1)) and (more := sock.recv(65536)):
        body += more
    return head + b"\r\n\r\n" + body


def test_long_polls_beyond_the_caps_are_answered_at_once_and_sync_calls_keep_going(served: tuple[int, str]):
    port, task_id = served
    add = json.dumps({"args": {"a": 1, "b": 2}}).encode()
    timed_call(port, "POST", "/api/add", add)  # warm the sync pool
    polls = []
    try:
        for i in range(LONG_POLLS):
            # Anonymous callers are told apart by address: 127.0.0.x gives several callers.
            sock = socket.create_connection(("127.0.0.1", port), timeout=30,
                                            source_address=(f"127.0.0.{1 + i % 4}", 0))
            sock.sendall(f"GET /tasks/{task_id}?wait=10 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            polls.append(sock)
        answered = answers_until_quiet(polls, quiet_s=1.0)  # the polls not granted a wait
        status, elapsed = timed_call(port, "GET", "/healthz")
        assert status == 200 and elapsed < BOUND_S
        status, elapsed = timed_call(port, "POST", "/api/add", add)
        assert status == 200 and elapsed < BOUND_S
        # 4 callers x 2 slots are waiting; every other poll came back at once with the task as it is.
        assert len(answered) == LONG_POLLS - 8
        assert all(a.startswith(b"HTTP/1.1 200 ") and b"X-Neutrino-Wait: not-granted" in a for a in answered)
        assert all(b'"status": "queued"' in a or b'"status":"queued"' in a for a in answered)
    finally:
        for sock in polls:
            sock.close()
