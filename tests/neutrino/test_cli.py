"""The `neutrino` command as a user runs it: real processes, real HTTP."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.nats_server import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


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
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def neutrino(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "neutrino.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def request(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, response.read()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    env = cli_env(tmp_path)
    assert neutrino("manage", "migrate", "-v0", env=env).returncode == 0
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "neutrino.cli", "serve", "--mode", "http", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "2"], env=env, cwd=ROOT,
    )
    try:
        assert wait_for_port("127.0.0.1", port, 30), "neutrino serve did not open its port"
        yield port, env
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def test_tasks_lists_the_registered_tasks(tmp_path: Path) -> None:
    result = neutrino("tasks", env=cli_env(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "MODE", "POOL", "TIMEOUT", "RETRIES"]
    assert any(line.split()[:3] == ["sleepy", "sync", "fast"] and "300 ms" in line for line in lines)


def test_a_broken_task_module_is_reported_at_start(tmp_path: Path) -> None:
    result = neutrino("--tasks", "no_such_tasks_module", "serve", "--port", str(free_port()),
                      env=cli_env(tmp_path))
    assert result.returncode == 2
    assert "cannot import task module 'no_such_tasks_module'" in result.stderr


def test_serve_answers_sync_calls_and_the_rows_survive_shutdown(served) -> None:
    port, _env = served
    status, body = request(port, "POST", "/api/async_add", {"args": {"a": 40, "b": 2}})
    assert status == 200 and json.loads(body)["result"] == 42
    task_id = json.loads(body)["task_id"]
    # Another gunicorn process may answer the poll; the row is written off the request path,
    # so give the writer its moment through the long-poll rather than a sleep.
    status, body = request(port, "GET", f"/tasks/{task_id}?wait=5")
    assert status == 200 and json.loads(body)["status"] == "completed"


def test_asgi_fallback_gets_every_path_neutrino_does_not_own(tmp_path: Path) -> None:
    env = cli_env(tmp_path, NEUTRINO_ASGI_FALLBACK="tests.fixtures.fallback_app:app")
    assert neutrino("manage", "migrate", "-v0", env=env).returncode == 0
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "neutrino.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], env=env, cwd=ROOT,
    )
    try:
        assert wait_for_port("127.0.0.1", port, 30)
        status, body = request(port, "GET", "/hello/world")
        assert (status, body) == (200, b"fallback saw /hello/world")
        status, body = request(port, "POST", "/api/async_add", {"args": {"a": 1, "b": 2}})
        assert status == 200 and json.loads(body)["result"] == 3
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
