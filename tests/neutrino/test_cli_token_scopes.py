"""`neutrino token create NAME [--admin] [--tasks a,b]` as a user runs it, then the tokens against
`neutrino serve`: real processes, real HTTP."""

from __future__ import annotations

import json

from tests.servers import CliEnv, http_server, neutrino, request


def create(env: dict[str, str], *args: str) -> str:
    result = neutrino("token", "create", *args, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_token_scopes_from_the_command_line_hold_on_a_running_server(cli_env: CliEnv) -> None:
    env = cli_env(NEUTRINO_ALLOW_ANONYMOUS="0")
    assert neutrino("manage", "migrate", "-v0", env=env).returncode == 0
    echoer = create(env, "echoer", "--tasks", "echo, noop")
    other = create(env, "other")
    boss = create(env, "boss", "--admin")
    listing = neutrino("token", "list", env=env).stdout
    lines = {line.split()[0]: line for line in listing.splitlines()[1:]}
    assert "SCOPE" in listing.splitlines()[0]
    assert "own tasks; calls echo,noop" in lines["echoer"] and "admin: all tasks" in lines["boss"]
    assert "own tasks" in lines["other"] and "calls" not in lines["other"]
    bad = neutrino("token", "create", "x", "--tasks", "a\tb", env=env)
    assert bad.returncode == 1 and "task name" in bad.stderr

    def call(method: str, path: str, token: str, body: dict | None = None) -> tuple[int, dict]:
        status, raw = request(port, method, path, body, headers={"Authorization": f"Bearer {token}"})
        return status, json.loads(raw)

    with http_server(env) as port:
        status, body = call("POST", "/api/echo", echoer, {"args": {"value": "hi"}})
        assert status == 200, body
        task_id = body["task_id"]
        status, body = call("POST", "/api/boom", echoer, {"args": {}})
        assert status == 403 and "may not call 'boom'" in body["message"]
        status, body = call("GET", f"/tasks/{task_id}?wait=5", echoer)
        assert status == 200 and body["created_by"] == "token:echoer"
        assert call("GET", f"/tasks/{task_id}", other)[0] == 404
        assert call("POST", f"/tasks/{task_id}/retry", other)[0] == 404
        assert task_id not in {item["task_id"] for item in call("GET", "/tasks", other)[1]["items"]}
        assert task_id in {item["task_id"] for item in call("GET", "/tasks", boss)[1]["items"]}
