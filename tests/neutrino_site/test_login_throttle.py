"""Sign-in is throttled per username and per address, through the real login form, across server processes.

Two `neutrino serve` processes share one database, as the replicas of a deployment do: failures on one
count on the other. The client's address comes from X-Forwarded-For (NEUTRINO_CLIENT_IP_HEADER, as
behind a proxy), so one test machine can sign in from several addresses.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.servers import ROOT, http_server, neutrino, server_env

PASSWORD = "throttle-admin-pw"
LIMIT = 5
LOCKOUT_S = 25.0  # short, so that one test sees a lock end; long enough for 5 sign-ins on a loaded machine


@dataclass
class Servers:
    ports: tuple[int, int]
    env: dict[str, str]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    tmp_path: Path = tmp_path_factory.mktemp("login-throttle")
    with ExitStack() as stack:
        env = stack.enter_context(server_env(
            tmp_path, NEUTRINO_LOGIN_FAILURE_LIMIT=str(LIMIT), NEUTRINO_LOGIN_LOCKOUT_S=str(LOCKOUT_S),
            NEUTRINO_CLIENT_IP_HEADER="X-Forwarded-For"))
        migrated = neutrino("manage", "migrate", "-v0", env=env)
        assert migrated.returncode == 0, migrated.stderr
        for name in ("admin", "other", "third", "fourth"):
            made = createadmin(name, env)
            assert made.returncode == 0, made.stderr
        first = stack.enter_context(http_server(env))
        second = stack.enter_context(http_server(env))
        yield Servers(ports=(first, second), env=env)


def createadmin(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "neutrino_site.cli", "createadmin", "--username", name,
                           "--password-stdin"], env=env, cwd=ROOT, input=PASSWORD + "\n", capture_output=True,
                          text=True, timeout=120)


def sign_in(port: int, username: str, password: str, address: str) -> httpx.Response:
    """The login form as a browser fills it: the page (CSRF cookie and token), then the post."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                      headers={"X-Forwarded-For": address}) as client:
        page = client.get("/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        return client.post("/login/", data={"username": username, "password": password,
                                            "csrfmiddlewaretoken": token, "next": "/"})


def refused(response: httpx.Response) -> bool:
    """The lock's answer: 429 and the login page saying why, with the form still there."""
    if response.status_code != 429:
        return False
    assert "Too many failed sign-ins" in response.text and 'name="password"' in response.text
    assert int(response.headers["Retry-After"]) == int(LOCKOUT_S)
    return True


def wrong_password(response: httpx.Response) -> bool:
    return response.status_code == 200 and "Your username and password didn" in response.text


def signed_in(response: httpx.Response) -> bool:
    return response.status_code == 302 and response.headers["location"] == "/"


def new_address() -> str:
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"


def test_failures_for_one_user_lock_it_on_every_server_and_from_every_address(servers: Servers) -> None:
    username = "other"
    for attempt in range(LIMIT - 1):  # alternately on the two processes, each from its own address
        response = sign_in(servers.ports[attempt % 2], username, "wrong", new_address())
        assert wrong_password(response), (attempt, response.status_code)
    assert refused(sign_in(servers.ports[0], username, "wrong", new_address()))
    # Locked: even the right password, on either process, from a fresh address.
    for port in servers.ports:
        assert refused(sign_in(port, username, PASSWORD, new_address()))
    # Other users are not affected.
    assert signed_in(sign_in(servers.ports[1], "third", PASSWORD, new_address()))


def test_failures_from_one_address_lock_that_address_for_every_user(servers: Servers) -> None:
    address = new_address()
    for attempt in range(LIMIT - 1):
        response = sign_in(servers.ports[attempt % 2], f"nobody-{attempt}", "wrong", address)
        assert wrong_password(response), (attempt, response.status_code)
    assert refused(sign_in(servers.ports[1], "nobody-last", "wrong", address))
    assert refused(sign_in(servers.ports[0], "fourth", PASSWORD, address))
    assert signed_in(sign_in(servers.ports[0], "fourth", PASSWORD, new_address()))


def test_a_successful_sign_in_forgets_the_users_failures(servers: Servers) -> None:
    address = new_address()
    for _ in range(LIMIT - 1):
        assert wrong_password(sign_in(servers.ports[0], "admin", "typo", address))
    assert signed_in(sign_in(servers.ports[1], "admin", PASSWORD, address))
    # The count started again: LIMIT - 1 more mistakes are still answered as mistakes.
    for _ in range(LIMIT - 1):
        assert wrong_password(sign_in(servers.ports[1], "admin", "typo", address))
    assert signed_in(sign_in(servers.ports[0], "admin", PASSWORD, address))
    # ... and counted from there: the LIMIT-th mistake in a row locks.
    for _ in range(LIMIT - 1):
        assert wrong_password(sign_in(servers.ports[0], "admin", "typo", address))
    assert refused(sign_in(servers.ports[1], "admin", "typo", address))


def test_the_lock_ends_after_the_lockout_time(servers: Servers) -> None:
    address = new_address()
    for _ in range(LIMIT):
        last = sign_in(servers.ports[0], "third", "wrong", address)
    assert refused(last)
    time.sleep(LOCKOUT_S + 1)  # no attempt meanwhile: one during the lock would extend it
    assert signed_in(sign_in(servers.ports[1], "third", PASSWORD, address))
