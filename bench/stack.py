"""The whole system for a benchmark, as `neutrino dev` runs it but on a scratch database:
nats-server, the HTTP server and one worker of the async pool, each a real process.

`neutrino_stack(..., worker=False)` leaves the worker out, so a benchmark can queue tasks first and
start one with `start_worker` when its clock starts (the drain figure of bench/vs_celery.py)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.engine.nats_server import NatsServer, free_port, wait_for_port
from workers.engine.processes import stop_process

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "neutrino_site.cli"]


def serve_env() -> dict[str, str]:
    """What `neutrino serve` needs to start: its own secret key (it refuses the public default) and the
    host names it answers. An environment that sets them keeps its own."""
    return {"DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(50),
            "DJANGO_ALLOWED_HOSTS": os.environ.get("DJANGO_ALLOWED_HOSTS") or "localhost,127.0.0.1,[::1]"}


@dataclass(frozen=True)
class Stack:
    port: int
    env: dict[str, str]
    data: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def database(self) -> str:
        return "PostgreSQL" if os.environ.get("DATABASE_URL") else "SQLite"


@contextmanager
def neutrino_stack(*, http_workers: int, concurrency: int, anonymous: bool = True,
                   worker: bool = True) -> Iterator[Stack]:
    """Start the stack on free ports (DATABASE_URL, when set, should name a scratch database)."""
    with tempfile.TemporaryDirectory(prefix="neutrino-bench-") as tmp:
        data = Path(tmp)
        nats = NatsServer(store_dir=data / "nats").start()
        env = {
            **os.environ,
            **serve_env(),
            "DJANGO_SETTINGS_MODULE": "neutrino_site.settings",
            "NEUTRINO_DATA_DIR": str(data),
            "NEUTRINO_TASK_MODULES": "bench.bench_tasks",
            "NEUTRINO_NATS_URL": nats.url,
            "NEUTRINO_ALLOW_ANONYMOUS": "1" if anonymous else "0",
            "NEUTRINO_WS_PORT": "0",
            "PYTHONPATH": str(ROOT),
            "NEUTRINO_LOG_LEVEL": "WARNING",
        }
        subprocess.run([*CLI, "manage", "migrate", "-v0"], env=env, cwd=ROOT, check=True)
        port = free_port()
        processes = [
            subprocess.Popen([*CLI, "serve", "--mode", "http", "--host", "127.0.0.1", "--port", str(port),
                              "--workers", str(http_workers)], env=env, cwd=ROOT),
        ]
        stack = Stack(port=port, env=env, data=data)
        if worker:
            processes.append(start_worker(stack, concurrency=concurrency))
        try:
            if not wait_for_port("127.0.0.1", port, 30):
                raise SystemExit("the HTTP server did not start within 30 s")
            yield stack
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)  # both at once; then wait for each
            for process in processes:
                stop_process(process, 60, terminate=False)
            nats.stop()


def start_worker(stack: Stack, *, concurrency: int) -> subprocess.Popen[bytes]:
    """One worker of the async pool on `stack`; the caller stops it (SIGTERM, then `stop_process`)."""
    return subprocess.Popen([*CLI, "serve", "--mode", "nats", "--pool", "async", "--concurrency", str(concurrency)],
                            env=stack.env, cwd=ROOT)


def completed_count(data: Path, function: str = "async_noop") -> int:
    """Completed rows of `function`, read straight from the database (no Django start-up per poll)."""
    rows = query(data, "SELECT COUNT(*) FROM tasks_app_task WHERE function_name = %s AND status = 'completed'",
                 (function,))
    return int(rows[0][0]) if rows else 0


def query(data: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of `sql` (with `%s` placeholders) from the stack's database: PostgreSQL with DATABASE_URL, else
    the SQLite file in `data`."""
    url = os.environ.get("DATABASE_URL")
    if url:
        import psycopg

        with psycopg.connect(url) as conn:
            return list(conn.execute(sql, params).fetchall())
    import sqlite3

    with sqlite3.connect(data / "neutrino.db", timeout=30) as conn:
        return list(conn.execute(sql.replace("%s", "?"), params).fetchall())
