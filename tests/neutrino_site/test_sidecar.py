"""The websocket sidecar of `neutrino serve --mode http` (port + 1): the dashboard's websocket and nothing else.

A real server with its sidecar, a raw socket and a signed-in websocket client.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets

from tests.servers import ROOT, database_handles, neutrino, server_env
from workers.engine.nats_server import free_port, wait_for_port
from workers.engine.processes import stop_process

PASSWORD = "front-door-password-1"


@dataclass(frozen=True)
class Served:
    port: int
    ws_port: int
    pid: int
    env: dict[str, str]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("sidecar")
    with server_env(tmp, NEUTRINO_HTTP_HEADER_TIMEOUT_S="2") as env:
        assert neutrino("manage", "migrate", "-v0", env=env).returncode == 0
        created = subprocess.run([sys.executable, "-m", "neutrino_site.cli", "createadmin", "--password-stdin"],
                                 input=PASSWORD + "\n", env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert created.returncode == 0, created.stderr
        port, ws_port = free_port(), free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "neutrino_site.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--ws-port", str(ws_port), "--workers", "1"], env=env, cwd=ROOT)
        try:
            assert wait_for_port("127.0.0.1", port, 30) and wait_for_port("127.0.0.1", ws_port, 30)
            yield Served(port=port, ws_port=ws_port, pid=sidecar_pid(process.pid), env=env)
        finally:
            stop_process(process, 30)


def sidecar_pid(parent: int) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"neutrino_site.sidecar" in argv and str(parent).encode() in argv:
                return int(entry.name)
    raise AssertionError("no websocket sidecar process found")


def first_answer(port: int, data: bytes, timeout_s: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(data)
        return sock.recv(65536)


@pytest.mark.parametrize("request_head", [
    b"GET /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET /api/docs HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    # A 20 MB body announced and not sent: the answer comes without the server waiting for it.
    b"POST /api/add HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 20000000\r\n\r\n",
])
def test_the_websocket_port_refuses_every_http_request_unread(served: Served, request_head: bytes):
    assert first_answer(served.ws_port, request_head).startswith(b"HTTP/1.1 404 ")


def test_a_half_sent_head_on_the_websocket_port_is_cut_off(served: Served):
    # The server under test gives a head 2 s; uvicorn alone would wait for ever.
    with socket.create_connection(("127.0.0.1", served.ws_port), timeout=10) as sock:
        sock.sendall(b"GET /ws/dashboard/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        assert sock.recv(1024) == b""
        assert time.monotonic() - started < 8


def test_the_websocket_works_and_holds_no_database_connection_between_messages(served: Served):
    base = f"http://127.0.0.1:{served.port}"
    with httpx.Client(base_url=base, timeout=30) as client:
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', client.get("/login/").text).group(1)
        signed = client.post("/login/", data={"username": "admin", "password": PASSWORD,
                                              "csrfmiddlewaretoken": token, "next": "/"})
        assert signed.status_code == 302, signed.text[:300]
        cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())

    async def scenario() -> list[str]:
        url = f"ws://127.0.0.1:{served.ws_port}/ws/dashboard/?view=list"
        async with websockets.connect(url, additional_headers={"Origin": base, "Cookie": cookie}) as ws:
            async with asyncio.timeout(15):
                first = await ws.recv()
            assert 'id="task-table"' in str(first)  # the session check and a live update read the database
            await asyncio.sleep(0.5)
            return database_handles(served.pid, served.env)

    assert asyncio.run(scenario()) == []
