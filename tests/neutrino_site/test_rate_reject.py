"""A rate limit in reject mode, through two gateways (two `neutrino serve` processes on one database):
the calls past the rate are answered 429 with Retry-After and the error contract, whichever gateway they
reach, and make no task."""

from __future__ import annotations

import http.client
import json

import pytest

from tests.servers import CliEnv, http_server, neutrino

pytestmark = pytest.mark.timeout(180)


def call(port: int, n: int) -> tuple[int, dict, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/api/lim_reject", body=json.dumps({"args": {"n": n}}),
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    return response.status, body, response.getheader("Retry-After")


COUNT_ROWS = "from tasks_app.models import Task; print(Task.objects.filter(function_name='lim_reject').count())"


def test_two_gateways_share_one_rate_and_answer_429_past_it(cli_env: CliEnv) -> None:
    env = cli_env(NEUTRINO_TASK_MODULES="tests.fixtures.limit_tasks")
    assert neutrino("manage", "migrate", "-v0", env=env).returncode == 0
    with http_server(env) as first, http_server(env) as second:
        answers = [call(port, n) for n, port in enumerate([first, second, first, second, first, second])]

    statuses = [status for status, _, _ in answers]
    assert statuses == [200, 200, 200, 429, 429, 429], answers  # 3 a minute, for both gateways together
    assert [body["result"] for status, body, _ in answers if status == 200] == [0, 2, 4]
    for _, body, retry_after in answers[3:]:
        assert body["error"] == "overloaded"
        assert body["reason"] == "rate_limit" and body["task"] == "lim_reject" and body["rate_limit"] == "3/m"
        assert "rate limit of lim_reject reached (3/m)" in body["message"]
        assert retry_after is not None and 1 <= int(retry_after) <= 60
        assert int(retry_after) == body["retry_after_s"]
    counted = neutrino("manage", "shell", "-c", COUNT_ROWS, env=env)
    assert counted.returncode == 0, counted.stderr
    assert counted.stdout.strip().splitlines()[-1] == "3"  # the refused calls made no task
