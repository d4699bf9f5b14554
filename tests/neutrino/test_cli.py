"""The `neutrino` command as a user runs it: real processes, real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.servers import CliEnv, http_server, neutrino, request
from workers.engine.nats_server import free_port


@pytest.fixture
def served(cli_env: CliEnv) -> Iterator[tuple[int, dict[str, str]]]:
    env = cli_env()
    assert neutrino("manage", "migrate", "-v0", env=env).returncode == 0
    with http_server(env, workers=2) as port:
        yield port, env


def test_tasks_lists_the_registered_tasks(cli_env: CliEnv) -> None:
    result = neutrino("tasks", env=cli_env())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "MODE", "POOL", "TIMEOUT", "RETRIES"]
    assert any(line.split()[:3] == ["sleepy", "sync", "fast"] and "300 ms" in line for line in lines)


def test_a_broken_task_module_is_reported_at_start(cli_env: CliEnv) -> None:
    result = neutrino("--tasks", "no_such_tasks_module", "serve", "--port", str(free_port()),
                      env=cli_env())
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


def test_asgi_fallback_gets_every_path_neutrino_does_not_own(cli_env: CliEnv) -> None:
    env = cli_env(NEUTRINO_ASGI_FALLBACK="tests.fixtures.fallback_app:app")
    assert neutrino("manage", "migrate", "-v0", env=env).returncode == 0
    with http_server(env) as port:
        status, body = request(port, "GET", "/hello/world")
        assert (status, body) == (200, b"fallback saw /hello/world")
        status, body = request(port, "POST", "/api/async_add", {"args": {"a": 1, "b": 2}})
        assert status == 200 and json.loads(body)["result"] == 3
