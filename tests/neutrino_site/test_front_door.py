"""The front door of `neutrino serve --mode http`, as an attacker meets it: a real server process, raw sockets.

Slow clients cost no request thread; bodies over the limit get 413 (a plain urllib client reads it);
a head over the cap gets 431; a head or body that stops arriving ends with 408 within its timeout.
(`bench/slow_clients.py` measures the same with 500 sockets.)
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import ROOT, CliEnv, http_server, neutrino, server_env
from workers.engine.nats_server import free_port, wait_for_port
from workers.engine.processes import stop_process

SLOW_SOCKETS = 200
BOUND_S = 1.0  # today (gthread reading in its request threads) these calls hang for as long as the sockets stay


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp: Path = tmp_path_factory.mktemp("front-door")
    with server_env(tmp, NEUTRINO_TASK_MODULES="examples.tasks", NEUTRINO_HTTP_HEADER_TIMEOUT_S="2",
                    NEUTRINO_HTTP_BODY_TIMEOUT_S="2") as env:
        assert neutrino("manage", "migrate", "-v0", env=env).returncode == 0
        with http_server(env, workers=1) as port:
            yield port


def timed_call(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, float]:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, time.monotonic() - started


def raw(port: int, data: bytes, *, timeout_s: float = 10.0, until_close: bool = True) -> bytes:
    """Send `data`, then read what the server answers until it closes (or only its first bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            if not until_close:
                break
        return b"".join(chunks)


def test_slow_clients_delay_neither_healthz_nor_a_sync_call(server: int):
    timed_call(server, "POST", "/api/add", json.dumps({"args": {"a": 1, "b": 2}}).encode())  # warm the pool
    slow = []
    try:
        for _ in range(SLOW_SOCKETS):
            sock = socket.create_connection(("127.0.0.1", server), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slo")  # half a head, then nothing
            slow.append(sock)
        time.sleep(0.3)
        status, elapsed = timed_call(server, "GET", "/healthz")
        assert status == 200 and elapsed < BOUND_S
        status, elapsed = timed_call(server, "POST", "/api/add", json.dumps({"args": {"a": 1, "b": 2}}).encode())
        assert status == 200 and elapsed < BOUND_S
    finally:
        for sock in slow:
            sock.close()


def test_a_plain_urllib_client_sending_a_big_body_reads_413(server: int):
    body = b"x" * (20 * 1024 * 1024)  # 20 MB, over the 1 MB default payload limit
    request = urllib.request.Request(f"http://127.0.0.1:{server}/api/add", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413
    assert json.loads(refused.value.read())["error"] == "content_too_large"


def declare_a_gigabyte_send_a_few_bytes(port: int) -> tuple[int, dict]:
    """A task call whose head declares a 1 GB body, of which only a few bytes follow; then read the answer
    while the rest is still "on its way". A server that answers it never had the body to parse."""
    head = (b"POST /api/add HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b'{"args": {"a": 1, ')
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read())


def test_a_body_over_the_limit_is_refused_before_it_is_read(server: int):
    status, body = declare_a_gigabyte_send_a_few_bytes(server)
    assert status == 413
    assert body["error"] == "content_too_large" and "limit" in body["message"], body


def test_a_head_over_the_cap_or_with_too_many_headers_gets_431(server: int):
    answer = raw(server, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(150))
    answer = raw(server, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + many + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")
    # A head that never ends: refused once it passes the cap, without waiting for the rest.
    answer = raw(server, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Long: v\r\n" * 8000, until_close=False)
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_a_head_or_body_that_stops_arriving_ends_with_408(server: int):
    # The server under test runs with 2 s header and body timeouts.
    started = time.monotonic()
    answer = raw(server, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n", timeout_s=10)
    assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 8
    started = time.monotonic()
    half_body = b"POST /api/add HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"args\""
    answer = raw(server, half_body, timeout_s=10)
    assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 8


def test_a_chunked_body_is_refused_with_411(server: int):
    chunked = b"POST /api/add HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    answer = raw(server, chunked, until_close=False)
    assert answer.startswith(b"HTTP/1.1 411 ")


def test_keep_alive_and_pipelined_requests_still_work(server: int):
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
    for _ in range(3):  # one connection, several requests (the main loop reads each)
        conn.request("POST", "/api/add", body=json.dumps({"args": {"a": 2, "b": 3}}),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["result"] == 5
    conn.close()
    two = (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
           b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert raw(server, two).count(b"HTTP/1.1 200 ") == 2


def test_the_asgi_mode_has_the_same_limits(cli_env: CliEnv):
    env = cli_env(NEUTRINO_TASK_MODULES="examples.tasks", NEUTRINO_HTTP_HEADER_TIMEOUT_S="2")
    assert neutrino("manage", "migrate", "-v0", env=env).returncode == 0
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "neutrino_site.cli", "serve", "--mode", "http", "--asgi", "--host", "127.0.0.1",
         "--port", str(port), "--ws-port", "0", "--workers", "1"], env=env, cwd=ROOT)
    try:
        assert wait_for_port("127.0.0.1", port, 30)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/add", data=b"x" * (20 * 1024 * 1024),
                                         method="POST", headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 413
        status, body = declare_a_gigabyte_send_a_few_bytes(port)
        assert status == 413 and body["error"] == "content_too_large", body
        started = time.monotonic()
        assert raw(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n") == b""  # half a head: cut off
        assert time.monotonic() - started < 8
    finally:
        stop_process(process, 30)
