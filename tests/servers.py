"""Helpers for tests that run `neutrino` as a user does: real processes on free ports, real HTTP."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from workers.engine.nats_server import free_port, wait_for_port
from workers.engine.processes import stop_process

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def wait_for(predicate: Callable[[], T], *, timeout_s: float = 30.0, what: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy (returned), failing after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    # Its own SQLite file, whatever database the suite runs on: these servers migrate it themselves.
    inherited = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    return {
        **inherited,
        "DJANGO_SETTINGS_MODULE": "neutrino_site.settings",
        "NEUTRINO_DATA_DIR": str(tmp_path),
        "NEUTRINO_SQLITE_PATH": str(tmp_path / "cli.db"),
        "NEUTRINO_TASK_MODULES": "tests.fixtures.api_tasks",
        "NEUTRINO_NATS_URL": "",
        "NEUTRINO_ALLOW_ANONYMOUS": "1",
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def neutrino(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "neutrino_site.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def request(port: int, method: str, path: str, body: dict | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    return response.status, response.read()


@contextmanager
def http_server(env: dict[str, str], *, workers: int = 1) -> Iterator[int]:
    """`neutrino serve --mode http` on a free port (the database must be migrated); yields the port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "neutrino_site.cli", "serve", "--mode", "http", "--host", "127.0.0.1",
         "--port", str(port), "--ws-port", "0", "--workers", str(workers)], env=env, cwd=ROOT,
    )
    try:
        assert wait_for_port("127.0.0.1", port, 30), "neutrino serve did not open its port"
        yield port
    finally:
        stop_process(process, 30)


@contextmanager
def neutrino_dev(env: dict[str, str], *, cwd: Path, log_path: Path, args: tuple[str, ...] = ()) -> Iterator[int]:
    """`neutrino dev` as a process, on a free port, until it says it serves; stopped with Ctrl-C after."""
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "neutrino_site.cli", "dev", "--port", str(port), "--ws-port", str(free_port()),
             *args],
            env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_for_port("127.0.0.1", port, 60), log_path.read_text()
        deadline = time.monotonic() + 30
        while "serving http://" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield port
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)
