"""`neutrino dev`: the whole system on one machine, as child processes of one supervisor.

It starts nats-server (JetStream, store under ./data/nats), migrates the database,
creates the first admin account when there is none (its password is printed once),
starts the HTTP server (which brings the dashboard's websocket process along on
--ws-port) and one worker per enabled NATS pool, and restarts any of
them that dies. Pools an admin enables or disables while it runs gain or lose
their worker within a few seconds. Ctrl-C stops the HTTP server and the workers
(gracefully: running tasks finish or go back to the stream), then nats-server.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.management import call_command

from workers.nats_server import NatsServer, wait_for_port

logger = logging.getLogger("neutrino.dev")

CHECK_EVERY_S = 2.0
RESTART_BACKOFF_S = 1.0


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    def start(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(self.argv, env=env, start_new_session=True)
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop within %.0f s; killing it", self.name, timeout_s)
            self.process.kill()
            self.process.wait(5)


def _say(message: str) -> None:
    print(f"neutrino dev: {message}", file=sys.stderr, flush=True)


def run_dev(*, host: str, port: int, nats_port: int, ws_port: int | None = None,
            allow_anonymous: bool = False) -> int:
    from pools_app.selectors import nats_pool_names
    from tasks_app.services import admin_ensure_first
    from tasks_app.startup import check_tasks

    ws_port = port + 1 if ws_port is None else ws_port
    data_dir = Path(settings.DATA_DIR)
    data_dir.mkdir(parents=True, exist_ok=True)
    call_command("migrate", interactive=False, verbosity=0)
    check_tasks()
    password = admin_ensure_first(username="admin")
    if password is not None:
        _say(f"created the dashboard account 'admin' with password {password}  (shown once: only its hash "
             "is stored; `neutrino createadmin` makes more)")

    nats = NatsServer(store_dir=data_dir / "nats", port=nats_port, log_file=data_dir / "nats-server.log")
    nats.start()
    env = {**os.environ, "NEUTRINO_NATS_URL": nats.url, "NEUTRINO_ALLOW_ANONYMOUS": "1" if allow_anonymous else "0"}
    cli = [sys.executable, "-m", "neutrino.cli"]
    http = Child("http server", [*cli, "serve", "--mode", "http", "--host", host, "--port", str(port),
                                 "--ws-port", str(ws_port), "--workers", "1", "--threads", "16"])
    workers: dict[str, Child] = {}
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    http.start(env)
    if wait_for_port(host if host != "0.0.0.0" else "127.0.0.1", port, 30):
        _say(f"serving http://{host}:{port}/  (dashboard websocket: port {ws_port}, API docs: /api/docs, "
             f"NATS: {nats.url}, data: {data_dir})")
        _say("API: anonymous calls allowed (loopback only; --require-token turns this off)" if allow_anonymous
             else "API: every call needs a token: `neutrino token create NAME`, then 'Authorization: Bearer <token>'")
    else:
        _say(f"the HTTP server did not open port {port} within 30 s; see its output above")
    try:
        while not stopping.is_set():
            wanted = set(nats_pool_names())
            for pool in sorted(wanted - set(workers)):
                workers[pool] = Child(f"worker[{pool}]", [*cli, "serve", "--mode", "nats", "--pool", pool])
                workers[pool].start(env)
                _say(f"started a worker for pool {pool} (pid {workers[pool].process.pid})")  # type: ignore[union-attr]
            for pool in sorted(set(workers) - wanted):
                _say(f"pool {pool} was disabled or removed; stopping its worker")
                workers.pop(pool).stop(settings.NEUTRINO_WORKER_GRACE_S + 5)
            for child in [http, *workers.values()]:
                if not child.alive() and time.monotonic() - child.started_at > RESTART_BACKOFF_S:
                    code = child.process.returncode if child.process else None
                    child.restarts += 1
                    _say(f"{child.name} exited with {code}; restarting it (restart #{child.restarts})")
                    child.start(env)
            stopping.wait(CHECK_EVERY_S)
    finally:
        _say("stopping")
        for child in [http, *workers.values()]:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        for child in [http, *workers.values()]:
            child.stop(settings.NEUTRINO_WORKER_GRACE_S + 5)
        nats.stop()
        _say("stopped")
    return 0
