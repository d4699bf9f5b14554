"""An open dashboard socket re-checks its session: logout or deactivation closes it within the interval.

A real server (`neutrino serve --mode http`, the websocket process beside gunicorn) with a one-second
NEUTRINO_WS_SESSION_CHECK_S, a client signed in through the login form, and a real websocket client.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.dashboard.conftest import ROOT, TASK_MODULES
from tests.servers import database_handles, server_env
from workers.engine.nats_server import free_port, wait_for_port
from workers.engine.processes import stop_process

CHECK_S = 1.0
CLOSED_WITHIN_S = CHECK_S + 9.0  # one interval, and generous room for a loaded machine
PASSWORD = "recheck-admin-pw"
USERS = ("leaver", "deactivated", "stayer")


@dataclass
class Server:
    port: int
    ws_port: int
    env: dict[str, str]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def cli(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "neutrino_site.cli", *args], env=env, cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("ws-recheck")
    with server_env(root, NEUTRINO_TASK_MODULES=TASK_MODULES, NEUTRINO_WS_SESSION_CHECK_S=str(CHECK_S),
                    PYTHONUNBUFFERED="1") as env:
        for name in ("NEUTRINO_WS_PORT", "NEUTRINO_WS_URL"):
            env.pop(name, None)
        migrated = cli("manage", "migrate", "-v0", env=env)
        assert migrated.returncode == 0, migrated.stderr
        for username in USERS:
            made = cli("createadmin", "--username", username, "--password-stdin", env=env, stdin=PASSWORD + "\n")
            assert made.returncode == 0, made.stderr
        port, ws_port = free_port(), free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "neutrino_site.cli", "serve", "--mode", "http", "--host", "127.0.0.1",
             "--port", str(port), "--ws-port", str(ws_port), "--workers", "1"], env=env, cwd=ROOT)
        try:
            assert wait_for_port("127.0.0.1", port, 30) and wait_for_port("127.0.0.1", ws_port, 30)
            yield Server(port=port, ws_port=ws_port, env=env)
        finally:
            stop_process(process, 30)


def signed_in(server: Server, username: str) -> httpx.Client:
    client = httpx.Client(base_url=server.base_url, timeout=30)
    page = client.get("/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    response = client.post("/login/", data={"username": username, "password": PASSWORD,
                                            "csrfmiddlewaretoken": token, "next": "/"})
    assert response.status_code == 302, response.text[:300]
    return client


def socket_headers(server: Server, client: httpx.Client) -> dict[str, str]:
    return {"Origin": server.base_url,
            "Cookie": "; ".join(f"{name}={value}" for name, value in client.cookies.items())}


async def open_socket(server: Server, client: httpx.Client) -> websockets.ClientConnection:
    socket = await websockets.connect(f"ws://127.0.0.1:{server.ws_port}/ws/dashboard/?view=list",
                                      additional_headers=socket_headers(server, client))
    first = await asyncio.wait_for(socket.recv(), 10)
    assert 'id="task-table"' in str(first)  # accepted, and the page's current state came
    return socket


async def still_open_after(socket: websockets.ClientConnection, seconds: float) -> bool:
    """No close for `seconds` (several checks): nothing arrives meanwhile, as no task changes."""
    try:
        await asyncio.wait_for(socket.recv(), seconds)
    except TimeoutError:
        return True
    except ConnectionClosed:
        return False
    return True


async def closed_code(socket: websockets.ClientConnection) -> int | None:
    async with asyncio.timeout(CLOSED_WITHIN_S):
        await socket.wait_closed()
    return socket.close_code


def test_logging_out_closes_the_open_socket(server: Server) -> None:
    client = signed_in(server, "leaver")

    async def scenario() -> None:
        socket = await open_socket(server, client)
        assert await still_open_after(socket, 3 * CHECK_S), "a valid session must keep its socket"
        logout = await asyncio.to_thread(client.post, "/logout/",
                                         headers={"X-CSRFToken": client.cookies["csrftoken"]})
        assert logout.status_code == 302, logout.text[:300]
        assert await closed_code(socket) == 4401

    asyncio.run(scenario())


def test_deactivating_the_user_closes_the_open_socket(server: Server) -> None:
    client = signed_in(server, "deactivated")

    async def scenario() -> None:
        socket = await open_socket(server, client)
        deactivated = await asyncio.to_thread(
            cli, "manage", "shell", "-c",
            "from django.contrib.auth.models import User; "
            "print(User.objects.filter(username='deactivated').update(is_active=False))", env=server.env)
        assert deactivated.stdout.strip().endswith("1"), deactivated.stderr
        assert await closed_code(socket) == 4401

    asyncio.run(scenario())


def sidecar_pid(ws_port: int) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"neutrino_site.sidecar" in argv and str(ws_port).encode() in argv:
            return int(entry.name)
    raise AssertionError(f"no websocket process for port {ws_port}")


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="reads open files from /proc (Linux)")
def test_an_open_socket_holds_no_database_connection_between_checks(server: Server) -> None:
    client = signed_in(server, "stayer")
    pid = sidecar_pid(server.ws_port)

    async def scenario() -> list[int]:
        socket = await open_socket(server, client)  # its first payload read the database
        try:
            await asyncio.sleep(CHECK_S * 1.5)  # past the first check
            samples = []
            for _ in range(20):  # over about 4 checks; a check itself holds the file for milliseconds
                samples.append(len(database_handles(pid, server.env)))
                await asyncio.sleep(CHECK_S / 5)
            assert await still_open_after(socket, 0.1)
            return samples
        finally:
            await socket.close()

    samples = asyncio.run(scenario())
    assert samples.count(0) >= 16, f"the websocket process kept the database open: {samples}"
