"""The websocket process `neutrino serve --mode http` starts beside gunicorn: it comes and goes with the server."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.dashboard.conftest import ROOT, TASK_MODULES
from tests.servers import CliEnv
from workers.engine.nats_server import free_port, wait_for_port


def port_open(port: int) -> bool:
    return wait_for_port("127.0.0.1", port, 0.2)


def wait_closed(port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not port_open(port):
            return True
        time.sleep(0.1)
    return False


def start_server(cli_env: CliEnv) -> tuple[subprocess.Popen[bytes], int, int]:
    env = cli_env(NEUTRINO_TASK_MODULES=TASK_MODULES)
    migrate = subprocess.run([sys.executable, "-m", "neutrino_site.cli", "manage", "migrate", "-v0"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr
    port, ws_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "neutrino_site.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--ws-port", str(ws_port), "--workers", "1"], env=env, cwd=ROOT,
    )
    assert wait_for_port("127.0.0.1", port, 30) and wait_for_port("127.0.0.1", ws_port, 30)
    return process, port, ws_port


def test_the_websocket_process_stops_with_the_server(cli_env: CliEnv) -> None:
    process, port, ws_port = start_server(cli_env)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert not port_open(port) and wait_closed(ws_port, 10)


def test_the_websocket_process_stops_when_the_server_is_killed(cli_env: CliEnv) -> None:
    process, port, ws_port = start_server(cli_env)
    process.kill()  # no chance to stop its children: the sidecar notices its parent is gone
    process.wait(10)
    assert wait_closed(ws_port, 15), "the websocket process outlived a killed server"
    # gunicorn's own worker is not ours to reap; give it the same chance and do not leave it behind.
    wait_closed(port, 15)
