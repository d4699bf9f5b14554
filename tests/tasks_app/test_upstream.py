"""A gateway in front of the fast pool (NEUTRINO_SYNC_UPSTREAM): two real servers, one database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import CliEnv, http_server, neutrino, request, server_env
from workers.engine.nats_server import free_port


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """(gateway port, fast pool port), sharing one migrated database."""
    tmp: Path = tmp_path_factory.mktemp("upstream")
    with server_env(tmp) as env:
        assert neutrino("manage", "migrate", "-v0", env=env).returncode == 0
        with http_server(env) as fast_port:
            gateway_env = {**env, "NEUTRINO_SYNC_UPSTREAM": f"http://127.0.0.1:{fast_port}"}
            with http_server(gateway_env) as gateway_port:
                yield gateway_port, fast_port


def test_a_forwarded_call_answers_and_is_one_row_written_by_the_fast_pool(pair) -> None:
    gateway, _fast = pair
    status, body = request(gateway, "POST", "/api/async_add", {"args": {"a": 20, "b": 22}})
    assert status == 200, body
    answer = json.loads(body)
    assert answer["result"] == 42
    status, body = request(gateway, "GET", f"/tasks/{answer['task_id']}?wait=5")
    row = json.loads(body)
    assert row["status"] == "completed"
    assert not row["worker_id"].endswith(":gateway")  # a child of the fast pool ran it
    status, body = request(gateway, "GET", "/tasks?function=async_add")
    assert [item["task_id"] for item in json.loads(body)["items"]] == [answer["task_id"]]


@pytest.mark.parametrize(
    ("name", "args", "status"),
    [("async_add", {"a": "x", "b": 1}, 422), ("boom", {"message": "bad"}, 500), ("sleepy", {"seconds": 5}, 504)],
)
def test_errors_reach_the_caller_as_the_fast_pool_wrote_them(pair, name, args, status) -> None:
    gateway, fast = pair
    via_gateway = request(gateway, "POST", f"/api/{name}", {"args": args})
    direct = request(fast, "POST", f"/api/{name}", {"args": args})
    assert via_gateway[0] == direct[0] == status
    through, straight = json.loads(via_gateway[1]), json.loads(direct[1])
    through.pop("task_id", None), straight.pop("task_id", None)
    assert through == straight


def test_the_callers_shorter_deadline_travels_to_the_fast_pool(pair) -> None:
    gateway, _fast = pair
    status, body = request(gateway, "POST", "/api/pid_then_sleep", {"args": {"seconds": 1.5}},
                           headers={"X-Neutrino-Timeout-Ms": "200"})
    assert status == 504, body
    assert json.loads(body)["timeout_ms"] == 200


def test_an_unreachable_fast_pool_is_503(cli_env: CliEnv) -> None:
    env = cli_env(NEUTRINO_SYNC_UPSTREAM=f"http://127.0.0.1:{free_port()}")
    assert neutrino("manage", "migrate", "-v0", env=env).returncode == 0
    with http_server(env) as gateway:
        status, body = request(gateway, "POST", "/api/async_add", {"args": {"a": 1, "b": 2}})
    assert status == 503
    assert "fast pool" in json.loads(body)["message"]


@pytest.mark.parametrize("raw", ["²", "¹²³", "0", "-5", "12ms", "9" * 5000])
def test_a_timeout_header_that_is_not_ascii_digits_is_400_on_the_gateway_and_the_fast_pool(pair, raw) -> None:
    # http.client sends the header as latin-1: "²" is the byte 0xB2, which str.isdigit() takes for a digit.
    for port in pair:
        status, body = request(port, "POST", "/api/echo", {"args": {"value": 1}},
                               headers={"X-Neutrino-Timeout-Ms": raw})
        assert status == 400, body
        answer = json.loads(body)
        assert answer["error"] == "bad_request" and "X-Neutrino-Timeout-Ms" in answer["message"]
