"""Helpers for tests that run `neutrino` as a user does: real processes on free ports, real HTTP."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from workers.engine.nats_server import free_port, wait_for_port
from workers.engine.processes import stop_process

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")
# The `cli_env` fixture (tests/conftest.py): cli_env(**extra) -> environment of this test's processes.
CliEnv = Callable[..., dict[str, str]]


def wait_for(predicate: Callable[[], T], *, timeout_s: float = 30.0, what: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy (returned), failing after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


POSTGRES_SCHEMES = ("postgres://", "postgresql://")


@contextmanager
def private_database(tmp: Path) -> Iterator[dict[str, str]]:
    """Environment naming a fresh, empty database of its own for `neutrino` processes, which migrate it
    as a user's would: an SQLite file under `tmp`, or, when the suite runs on PostgreSQL (DATABASE_URL),
    a new database on that server, dropped (its connections cut) when the block ends."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url.startswith(POSTGRES_SCHEMES):
        yield {"DATABASE_URL": "", "NEUTRINO_SQLITE_PATH": str(tmp / "cli.db")}
        return
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    name = f"neutrino_t_{secrets.token_hex(6)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield {"DATABASE_URL": urlunsplit(parts._replace(path=f"/{name}"))}
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def server_env(tmp: Path, **extra: str) -> Iterator[dict[str, str]]:
    """The environment of the `neutrino` processes a test starts: data under `tmp`, a private database
    (`private_database`), the API test tasks, no NATS, anonymous calls allowed; `extra` on top.
    A test gets it from the `cli_env` fixture; a fixture wider than one test uses this directly."""
    with private_database(tmp) as database:
        yield {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "neutrino_site.settings",
            "NEUTRINO_DATA_DIR": str(tmp),
            **database,
            "NEUTRINO_TASK_MODULES": "tests.fixtures.api_tasks",
            "NEUTRINO_NATS_URL": "",
            "NEUTRINO_ALLOW_ANONYMOUS": "1",
            "PYTHONPATH": str(ROOT),
            **extra,
        }


def database_handles(pid: int, env: Mapping[str, str]) -> list[str]:
    """What process `pid` holds open of the database `env` names (Linux /proc): its SQLite files, or its
    TCP connections to the PostgreSQL server's port (a connection over a Unix socket is not seen)."""
    links = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            links.append(os.readlink(fd))
        except OSError:
            continue
    url = env.get("DATABASE_URL", "")
    if not url:
        return [link for link in links if link.startswith(env["NEUTRINO_SQLITE_PATH"])]
    port = urlsplit(url).port or 5432
    sockets = {link.removeprefix("socket:[").removesuffix("]") for link in links if link.startswith("socket:[")}
    held = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()  # sl, local "ADDR:PORT", remote "ADDR:PORT" (hex), ..., inode (10th)
            if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in sockets:
                held.append(f"{table} {fields[1]} -> {fields[2]}")
    return held


def neutrino(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "neutrino_site.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def request(port: int, method: str, path: str, body: dict | None = None,
            headers: dict[str, str] | None = None, *, host: str = "127.0.0.1") -> tuple[int, bytes]:
    """One call to `host`:`port` (a `Host` in `headers` takes the place of the address in the Host header)."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    return response.status, response.read()


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid`, from /proc (psutil is no dependency of Neutrino)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name in parentheses may hold spaces: the fields after its ")" are fixed.
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if ppid == pid:
            found.append(int(entry.name))
    return found


def child_running(pid: int, *words: str) -> int | None:
    """The child of `pid` whose command line holds `words` one after the other, if one does."""
    wanted = "\0" + "\0".join(words) + "\0"
    for child in child_pids(pid):
        try:
            argv = "\0" + Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if wanted in argv:
            return child
    return None


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie (dead, not yet reaped) does not."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@contextmanager
def http_server(env: dict[str, str], *, workers: int = 1) -> Iterator[int]:
    """`neutrino serve --mode http` on a free port (the database must be migrated); yields the port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "neutrino_site.cli", "serve", "--mode", "http", "--host", "127.0.0.1",
         "--port", str(port), "--ws-port", "0", "--workers", str(workers)], env=env, cwd=ROOT,
    )
    try:
        assert wait_for_port("127.0.0.1", port, 30), "neutrino serve did not open its port"
        yield port
    finally:
        stop_process(process, 30)


@contextmanager
def neutrino_dev(env: dict[str, str], *, cwd: Path, log_path: Path, args: tuple[str, ...] = ()) -> Iterator[int]:
    """`neutrino dev` as a process, on a free port, until it says it serves; stopped with Ctrl-C after."""
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "neutrino_site.cli", "dev", "--port", str(port), "--ws-port", str(free_port()),
             *args],
            env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_for_port("127.0.0.1", port, 60), log_path.read_text()
        deadline = time.monotonic() + 30
        while "serving http://" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield port
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)
