"""A chaos run: the whole system as `neutrino dev` starts it, tasks submitted while faults are injected,
then every task counted.

    python bench/chaos.py                       # SQLite, 2,000 tasks, a fault every 4 s
    python bench/chaos.py --tasks 20000 --fault-every 5
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test python bench/chaos.py --tasks 20000

On PostgreSQL it creates a scratch database beside the one DATABASE_URL names and drops it at the end.
It submits a mix of sync calls, queued tasks (single and in batches), gpu-pool tasks, tasks that fail and
are retried, tasks that fail as intended, long tasks and long tasks it cancels; meanwhile it injects, at
random moments and in turn, each kind of fault in `FAULTS`, and after each one measures how long the
system takes to answer a sync call and finish a queued task again. Every task function appends to an
effect log outside the database (bench/chaos_tasks.py), so the run counts what really ran.

At the end it prints one table and exits 1 if any accepted task was lost, stuck or completed twice, or
an answer was a 5xx other than the documented 503. `--json PATH` writes the figures for a program.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import random
import secrets
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from workers.engine.nats_server import free_port  # noqa: E402
from workers.engine.topology import LOST_MESSAGE_AFTER_S  # noqa: E402

CLI = [sys.executable, "-m", "neutrino_site.cli"]
FINAL = {"completed", "failed", "cancelled"}
DB_OUTAGE_S = 3.0
RECOVERY_LIMIT_S = 120.0

# What each kind of submission expects of its row in the end.
EXPECT = {
    "sync": {"completed"},
    "async": {"completed"},
    "batch": {"completed"},
    "retried": {"completed"},  # fails its first runs; retries take it to the end
    "long": {"completed"},
    "gpu": {"completed"},
    "doomed": {"failed"},
    "cancel": {"cancelled", "completed"},  # completed when it finished before the cancel came
    "probe": {"completed"},
}
MIX = [("async", 40), ("batch", 12), ("sync", 20), ("retried", 6), ("long", 4), ("gpu", 6), ("doomed", 4),
       ("cancel", 4)]


# --- the system under test ------------------------------------------------------------------------------


@dataclass
class System:
    """`neutrino dev` as a process, and what the run needs to reach it and its database."""

    port: int
    data: Path
    effect_log: Path
    database_url: str | None  # the scratch PostgreSQL database, or None for SQLite
    process: subprocess.Popen[bytes]
    log_path: Path

    def sqlite_path(self) -> Path:
        return self.data / "neutrino.db"

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Rows of `sql` (with %s placeholders), read straight from the database."""
        if self.database_url:
            import psycopg

            with psycopg.connect(self.database_url, connect_timeout=10) as conn:
                return list(conn.execute(sql, params).fetchall())
        with sqlite3.connect(self.sqlite_path(), timeout=60) as conn:
            return list(conn.execute(sql.replace("%s", "?"), params).fetchall())

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> None:
        if self.database_url:
            import psycopg

            with psycopg.connect(self.database_url, connect_timeout=10, autocommit=True) as conn:
                conn.execute(sql, params)
            return
        with sqlite3.connect(self.sqlite_path(), timeout=60) as conn:
            conn.execute(sql.replace("%s", "?"), params)


@contextmanager
def scratch_postgres(url: str, keep: bool) -> Iterator[str]:
    """A new database on the server `url` names, dropped afterwards unless `keep`."""
    import psycopg

    name = f"neutrino_chaos_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunparse(urlparse(url)._replace(path=f"/{name}"))
    finally:
        if keep:
            print(f"kept the database {name}")
        else:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def running_system(*, database_url: str | None, ack_wait_s: float, keep: bool) -> Iterator[System]:
    with tempfile.TemporaryDirectory(prefix="neutrino-chaos-") as tmp, \
            (scratch_postgres(database_url, keep) if database_url else _nothing()) as scratch:
        data = Path(tmp) / "data"
        env = {key: value for key, value in os.environ.items()
               if key not in {"DATABASE_URL", "NEUTRINO_SQLITE_PATH", "DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS",
                              "NEUTRINO_NATS_URL", "DJANGO_SETTINGS_MODULE"}}
        env.update({
            "NEUTRINO_DATA_DIR": str(data),
            "NEUTRINO_TASK_MODULES": "bench.chaos_tasks",
            "NEUTRINO_ACK_WAIT_S": str(ack_wait_s),
            "NEUTRINO_SWEEP_AFTER_S": "2",
            "NEUTRINO_RETRY_BACKOFF_S": "0.2",
            "NEUTRINO_RETRY_BACKOFF_MAX_S": "2",
            "NEUTRINO_WORKER_GRACE_S": "10",
            "NEUTRINO_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        })
        if scratch:
            env["DATABASE_URL"] = scratch
        port = free_port()
        log_path = Path(tmp) / "neutrino-dev.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen([*CLI, "dev", "--port", str(port), "--ws-port", str(free_port())],
                                       env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        system = System(port=port, data=data, effect_log=Path(tmp) / "effects.log", database_url=scratch,
                        process=process, log_path=log_path)
        try:
            deadline = time.monotonic() + 120
            while "serving http://" not in log_path.read_text(errors="replace"):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"neutrino dev did not start:\n{log_path.read_text(errors='replace')}")
                time.sleep(0.1)
            yield system
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
            _kill_leftovers(process.pid)


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


# --- processes ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    argv: tuple[str, ...]


def process_tree(root: int) -> list[Proc]:
    """`root` and every process below it, read from /proc."""
    procs: dict[int, Proc] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        procs[int(entry)] = Proc(int(entry), ppid, tuple(a.decode(errors="replace") for a in argv if a))
    below: list[Proc] = []
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        children = [p for p in procs.values() if p.ppid == parent]
        below.extend(children)
        frontier.extend(p.pid for p in children)
    return below


def _kill_leftovers(root: int) -> None:
    for proc in process_tree(root):
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _serve_mode(proc: Proc, mode: str) -> bool:
    argv = proc.argv
    return "serve" in argv and "--mode" in argv and argv[argv.index("--mode") + 1:][:1] == (mode,)


def workers(system: System) -> list[Proc]:
    return [p for p in process_tree(system.process.pid) if _serve_mode(p, "nats")]


def task_children(system: System) -> list[Proc]:
    """The child processes that run queued tasks: below a worker, children of its fork server."""
    tree = process_tree(system.process.pid)
    worker_pids = {p.pid for p in tree if _serve_mode(p, "nats")}
    fork_servers = {p.pid for p in tree if p.ppid in worker_pids and not _serve_mode(p, "nats")}
    return [p for p in tree if p.ppid in fork_servers]


def http_servers(system: System) -> list[Proc]:
    """The `neutrino serve --mode http` process and its request workers (same command line)."""
    return [p for p in process_tree(system.process.pid) if _serve_mode(p, "http")]


def nats_server(system: System) -> list[Proc]:
    return [p for p in process_tree(system.process.pid) if p.argv and p.argv[0].endswith("nats-server")]


# --- faults ---------------------------------------------------------------------------------------------


def _signal_one(procs: list[Proc], signum: int, what: str) -> str:
    if not procs:
        return f"no {what} to signal"
    victim = random.choice(procs)
    try:
        os.kill(victim.pid, signum)
    except ProcessLookupError:
        return f"{what} {victim.pid} was already gone"
    return f"{signal.Signals(signum).name} {what} {victim.pid}"


def kill_worker(system: System) -> str:
    return _signal_one(workers(system), signal.SIGKILL, "worker")


def drain_worker(system: System) -> str:
    return _signal_one(workers(system), signal.SIGTERM, "worker")


def kill_task_child(system: System) -> str:
    return _signal_one(task_children(system), signal.SIGKILL, "task child")


def kill_nats(system: System) -> str:
    return _signal_one(nats_server(system), signal.SIGKILL, "nats-server")


def kill_http(system: System) -> str:
    return _signal_one(http_servers(system), signal.SIGKILL, "http server process")


def database_outage(system: System) -> str:
    """The database refuses work for DB_OUTAGE_S: PostgreSQL stops accepting connections and terminates
    the open ones; SQLite is held under an exclusive lock."""
    if system.database_url:
        import psycopg

        name = urlparse(system.database_url).path.lstrip("/")
        admin = urlunparse(urlparse(system.database_url)._replace(path="/postgres"))
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            try:
                ended = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                     "WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchone()
                time.sleep(DB_OUTAGE_S)
            finally:
                conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        return f"PostgreSQL refused connections for {DB_OUTAGE_S:.0f} s ({ended[0] if ended else 0} backends ended)"
    lock = sqlite3.connect(system.sqlite_path(), timeout=60, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        time.sleep(DB_OUTAGE_S)
        lock.execute("ROLLBACK")
    finally:
        lock.close()
    return f"SQLite held under an exclusive lock for {DB_OUTAGE_S:.0f} s"


def rescale(system: System) -> str:
    """Change the async pool's replica floor, as an admin would: the autoscaler starts or stops workers."""
    floor = random.randint(1, 3)
    system.execute("UPDATE pools_app_pool SET min_replicas = %s WHERE name = 'async'", (floor,))
    return f"async pool's min replicas set to {floor}"


FAULTS: dict[str, Callable[[System], str]] = {
    "kill -9 worker": kill_worker,
    "kill -9 task child": kill_task_child,
    "SIGTERM worker (drain)": drain_worker,
    "kill -9 nats-server": kill_nats,
    "kill -9 http server": kill_http,
    "database unavailable": database_outage,
    "autoscaler rescale": rescale,
}


# --- submitting -----------------------------------------------------------------------------------------


@dataclass
class Planned:
    token: str
    kind: str
    task_id: str = ""
    answered: int = 0  # the HTTP status that accepted it


@dataclass
class Tally:
    """What the run asked for and what it was answered, shared by its threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    accepted: dict[str, Planned] = field(default_factory=dict)  # by token
    statuses: Counter[int] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)  # 5xx other than 503, with their body
    connection_errors: int = 0

    def answer(self, status: int, body: bytes, what: str) -> None:
        with self.lock:
            self.statuses[status] += 1
            if status >= 500 and status != 503:
                self.unexpected.append(f"{status} {what}: {body[:300]!r}")

    def accept(self, planned: Planned) -> None:
        with self.lock:
            self.accepted[planned.token] = planned


class Client:
    """One keep-alive connection to the gateway, opened again after any error."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: object | None = None, timeout_s: float = 30) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        data = json.dumps(body).encode() if body is not None else None
        try:
            self.conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            response = self.conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise


class Submitter:
    def __init__(self, system: System, tally: Tally, cancels: queue.Queue[str]) -> None:
        self.system = system
        self.tally = tally
        self.cancels = cancels
        self.client = Client(system.port)

    def _args(self, planned: Planned) -> dict[str, object]:
        args: dict[str, object] = {"token": planned.token, "log": str(self.system.effect_log)}
        if planned.kind == "retried":
            args["fail_times"] = random.randint(1, 2)
        elif planned.kind in {"long", "cancel"}:
            args["sleep_s"] = round(random.uniform(1.0, 4.0), 2)
        return args

    def submit(self, kind: str, batch_size: int = 1) -> int:
        """Submit one call of `kind`; the number of tasks it accepted (0 when refused)."""
        function = {"sync": "chaos_sync", "doomed": "chaos_doomed", "gpu": "chaos_gpu"}.get(kind, "chaos_async")
        plans = [Planned(token=secrets.token_hex(8), kind=kind) for _ in range(batch_size)]
        body: dict[str, object]
        if kind == "batch":
            path, body = f"/api/{function}/batch", {"items": [{"args": self._args(p)} for p in plans]}
        else:
            path, body = f"/api/{function}", {"args": self._args(plans[0])}
        try:
            status, raw = self.client.call("POST", path, body)
        except (OSError, http.client.HTTPException):
            with self.tally.lock:
                self.tally.connection_errors += 1
            return 0
        self.tally.answer(status, raw, f"POST {path}")
        if status not in (200, 202):
            return 0
        answer = json.loads(raw)
        ids = [item["task_id"] for item in answer["items"]] if kind == "batch" else [answer["task_id"]]
        for planned, task_id in zip(plans, ids, strict=True):
            planned.task_id, planned.answered = task_id, status
            self.tally.accept(planned)
            if kind == "cancel":
                self.cancels.put(task_id)
        return len(plans)


def canceller(port: int, tally: Tally, cancels: queue.Queue[str], done: threading.Event) -> None:
    """Cancels what it is handed, a moment after it was accepted (some before they run, some while)."""
    client = Client(port)
    while not (done.is_set() and cancels.empty()):
        try:
            task_id = cancels.get(timeout=0.2)
        except queue.Empty:
            continue
        time.sleep(random.uniform(0.0, 1.0))
        for _ in range(20):  # a refused call (503, the gateway restarting) is tried again
            try:
                status, raw = client.call("DELETE", f"/tasks/{task_id}")
            except (OSError, http.client.HTTPException):
                time.sleep(0.5)
                continue
            tally.answer(status, raw, "DELETE /tasks/<id>")
            if status != 503:
                break
            time.sleep(0.5)


# --- recovery -------------------------------------------------------------------------------------------


def recovered_after(system: System, tally: Tally, since: float) -> float | None:
    """Seconds from `since` until a sync call answers and a queued task completes; None past the limit."""
    client = Client(system.port)
    log = str(system.effect_log)
    synced = queued = False
    task_id = ""
    while time.monotonic() - since < RECOVERY_LIMIT_S:
        try:
            if not synced:
                token = secrets.token_hex(8)
                status, raw = client.call("POST", "/api/chaos_sync", {"args": {"token": token, "log": log}}, 10)
                tally.answer(status, raw, "POST /api/chaos_sync (probe)")
                if status == 200:
                    tally.accept(Planned(token, "sync", json.loads(raw).get("task_id", ""), status))
                    synced = True
            if synced and not task_id:
                token = secrets.token_hex(8)
                status, raw = client.call("POST", "/api/chaos_async", {"args": {"token": token, "log": log}}, 10)
                tally.answer(status, raw, "POST /api/chaos_async (probe)")
                if status == 202:
                    task_id = json.loads(raw)["task_id"]
                    tally.accept(Planned(token, "probe", task_id, status))
            if task_id and not queued:
                status, raw = client.call("GET", f"/tasks/{task_id}?wait=5", timeout_s=15)
                tally.answer(status, raw, "GET /tasks/<id> (probe)")
                queued = status == 200 and json.loads(raw).get("status") == "completed"
            if synced and queued:
                return time.monotonic() - since
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.1)
    return None


@dataclass
class Fault:
    kind: str
    at_s: float  # since the run began
    detail: str
    recovery_s: float | None


def inject_faults(system: System, tally: Tally, *, every_s: float, started: float, stop: threading.Event,
                  faults: list[Fault]) -> None:
    """Each kind in turn (a shuffled round), at random gaps around `every_s`, until `stop`."""
    kinds: list[str] = []
    while not stop.wait(random.uniform(0.5, 1.5) * every_s):
        if not kinds:
            kinds = random.sample(list(FAULTS), len(FAULTS))
        kind = kinds.pop()
        at = time.monotonic()
        try:
            detail = FAULTS[kind](system)
        except Exception as exc:  # the fault itself failed (a race with a restart): say so, go on
            detail = f"could not inject: {type(exc).__name__}: {exc}"
        faults.append(Fault(kind, at - started, detail, recovered_after(system, tally, at)))


# --- the count ------------------------------------------------------------------------------------------


@dataclass
class Effects:
    starts: dict[str, list[float]]
    ends: dict[str, list[float]]


def read_effects(path: Path) -> Effects:
    starts: dict[str, list[float]] = defaultdict(list)
    ends: dict[str, list[float]] = defaultdict(list)
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:
                (starts if parts[0] == "start" else ends)[parts[1]].append(float(parts[2]))
    return Effects(starts, ends)


def read_rows(system: System, ids: list[str]) -> dict[str, tuple[str, float | None]]:
    """id -> (status, completed_at as unix time) for the rows among `ids`."""
    rows: dict[str, tuple[str, float | None]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        if system.database_url:
            sql = ("SELECT id::text, status, EXTRACT(EPOCH FROM completed_at) FROM tasks_app_task "
                   "WHERE id = ANY(%s::uuid[])")
            for task_id, status, done in system.query(sql, (chunk,)):
                rows[str(task_id)] = (str(status), float(done) if done is not None else None)  # type: ignore[arg-type]
        else:
            # Django keeps SQLite UUIDs as 32 hex digits and datetimes as ISO text.
            marks = ",".join(["%s"] * len(chunk))
            sql = f"SELECT id, status, completed_at FROM tasks_app_task WHERE id IN ({marks})"
            for task_id, status, done in system.query(sql, tuple(i.replace("-", "") for i in chunk)):
                key = str(task_id)
                key = f"{key[:8]}-{key[8:12]}-{key[12:16]}-{key[16:20]}-{key[20:]}"
                rows[key] = (str(status), _iso_epoch(done))
    return rows


def _iso_epoch(value: object) -> float | None:
    from datetime import UTC, datetime

    if value is None:
        return None
    parsed = datetime.fromisoformat(str(value))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def unfinished(system: System, tally: Tally) -> list[str]:
    with tally.lock:
        ids = [p.task_id for p in tally.accepted.values() if p.task_id]
    rows = read_rows(system, ids)
    return [task_id for task_id in ids if rows.get(task_id, ("",))[0] not in FINAL]


def wait_until_settled(system: System, tally: Tally, *, quiet_s: float, say: Callable[[str], None]) -> float:
    """Wait until every accepted task is final, or nothing finished for `quiet_s`; the seconds waited."""
    began = time.monotonic()
    last, last_change = -1, time.monotonic()
    while True:
        left = len(unfinished(system, tally))
        if left == 0:
            return time.monotonic() - began
        if left != last:
            say(f"{left} accepted task(s) not finished yet")
            last, last_change = left, time.monotonic()
        elif time.monotonic() - last_change > quiet_s:
            return time.monotonic() - began
        time.sleep(2.0)


@dataclass
class Report:
    database: str
    seconds: float
    accepted: int
    completed: int
    failed_as_intended: int
    cancelled: int
    lost: int
    stuck: int
    wrong_outcome: int
    completed_twice: int
    completed_without_a_run: int
    started_again_after_a_kill: int
    ran_to_the_end_twice_before_recorded: int
    sync_rows_missing: int
    http_5xx_unexpected: int
    http_503: int
    connection_errors: int
    faults: int
    faults_by_kind: dict[str, dict[str, object]]
    examples: dict[str, list[str]]
    settle_s: float

    @property
    def ok(self) -> bool:
        return not (self.lost or self.stuck or self.completed_twice or self.completed_without_a_run
                    or self.wrong_outcome or self.http_5xx_unexpected)


def count(system: System, tally: Tally, faults: list[Fault], *, seconds: float, settle_s: float) -> Report:
    accepted = list(tally.accepted.values())
    rows = read_rows(system, [p.task_id for p in accepted if p.task_id])
    effects = read_effects(system.effect_log)
    tallies: Counter[str] = Counter()
    examples: dict[str, list[str]] = defaultdict(list)

    def note(what: str, planned: Planned, why: str) -> None:
        tallies[what] += 1
        if len(examples[what]) < 5:
            examples[what].append(f"{planned.kind} {planned.task_id} (token {planned.token}): {why}")

    for planned in accepted:
        status, completed_at = rows.get(planned.task_id, ("", None))
        starts = effects.starts.get(planned.token, [])
        if not status:
            # A sync call answers before its row is written (a batching writer): a gateway killed in that
            # moment loses the row, not the call. Queued tasks are written before they are accepted.
            note("sync_rows_missing" if planned.kind == "sync" else "lost", planned, "no row")
            continue
        if status not in FINAL:
            note("stuck" if starts else "lost", planned, f"{status}, {len(starts)} run(s) began")
            continue
        if status not in EXPECT[planned.kind]:
            note("wrong_outcome", planned, f"ended {status}, expected {sorted(EXPECT[planned.kind])}")
        tallies[status] += 1
        if planned.kind == "doomed":
            tallies["failed_as_intended"] += 1
        if status == "completed" and not effects.ends.get(planned.token):
            note("completed_without_a_run", planned, "its row says completed, but no run of it ended")
        if status == "completed" and completed_at is not None:
            late = [t for t in starts if t > completed_at]
            if late:
                note("completed_twice", planned, f"a run began {late[0] - completed_at:.3f} s after it completed")
        planned_runs = 3 if planned.kind == "retried" else 1  # a retried task fails at most twice first
        if len(starts) > planned_runs:
            tallies["started_again_after_a_kill"] += 1
        if len(effects.ends.get(planned.token, [])) > 1:
            tallies["ran_to_the_end_twice_before_recorded"] += 1
    by_kind: dict[str, dict[str, object]] = {}
    for kind in FAULTS:
        mine = [f for f in faults if f.kind == kind]
        times = [f.recovery_s for f in mine if f.recovery_s is not None]
        by_kind[kind] = {"count": len(mine), "recovery_p50_s": statistics.median(times) if times else None,
                         "recovery_max_s": max(times) if times else None,
                         "not_recovered": sum(1 for f in mine if f.recovery_s is None)}
    return Report(
        database="PostgreSQL" if system.database_url else "SQLite",
        seconds=seconds, accepted=len(accepted), completed=tallies["completed"],
        failed_as_intended=tallies["failed_as_intended"], cancelled=tallies["cancelled"],
        lost=tallies["lost"], stuck=tallies["stuck"], wrong_outcome=tallies["wrong_outcome"],
        completed_twice=tallies["completed_twice"], completed_without_a_run=tallies["completed_without_a_run"],
        started_again_after_a_kill=tallies["started_again_after_a_kill"],
        ran_to_the_end_twice_before_recorded=tallies["ran_to_the_end_twice_before_recorded"],
        sync_rows_missing=tallies["sync_rows_missing"], http_5xx_unexpected=len(tally.unexpected),
        http_503=tally.statuses[503], connection_errors=tally.connection_errors, faults=len(faults),
        faults_by_kind=by_kind, examples={**dict(examples), "unexpected_5xx": tally.unexpected[:5]},
        settle_s=settle_s,
    )


def print_report(report: Report) -> None:
    def seconds(value: object) -> str:
        return f"{value:.1f} s" if isinstance(value, float) else "-"

    print(f"\nchaos run on {report.database}: {report.accepted:,} tasks accepted in {report.seconds:.0f} s, "
          f"{report.faults} faults; settled {report.settle_s:.0f} s after the last submit")
    rows = [
        ("accepted", report.accepted), ("completed", report.completed),
        ("failed as intended", report.failed_as_intended), ("cancelled", report.cancelled),
        ("LOST (accepted, never finished)", report.lost), ("STUCK (began, never finished)", report.stuck),
        ("ended other than intended", report.wrong_outcome),
        ("COMPLETED TWICE (a run began after it completed)", report.completed_twice),
        ("COMPLETED WITHOUT A RUN (no end in the effect log)", report.completed_without_a_run),
        ("began again after a kill (at-least-once)", report.started_again_after_a_kill),
        ("ran to the end twice before its outcome was written", report.ran_to_the_end_twice_before_recorded),
        ("sync rows a killed gateway had not written yet", report.sync_rows_missing),
        ("5xx answers other than 503", report.http_5xx_unexpected),
        ("503 answers while a part was down", report.http_503),
        ("connections refused or cut", report.connection_errors),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>8,}")
    print(f"\n  {'fault':<24} {'count':>5} {'recovery p50':>13} {'max':>9} {'not recovered':>14}")
    for kind, figures in report.faults_by_kind.items():
        print(f"  {kind:<24} {figures['count']:>5} {seconds(figures['recovery_p50_s']):>13} "
              f"{seconds(figures['recovery_max_s']):>9} {figures['not_recovered']:>14}")
    for what, lines in report.examples.items():
        if lines:
            print(f"\n  {what}, for example:")
            for line in lines:
                print(f"    {line}")
    print("\nresult: " + ("OK: nothing lost, stuck or completed twice" if report.ok else "FAILED"))


def run(*, tasks: int, rate: float, fault_every_s: float, min_faults: int, ack_wait_s: float,
        database_url: str | None, keep: bool = False, say: Callable[[str], None] = print) -> Report:
    """Submit at least `tasks` tasks at about `rate` per second, and go on until at least `min_faults`
    faults were injected; then wait for the tasks to settle and count them."""
    with running_system(database_url=database_url, ack_wait_s=ack_wait_s, keep=keep) as system:
        say(f"neutrino dev is up on port {system.port}; submitting {tasks:,} tasks at about {rate:.0f}/s")
        tally, cancels, faults = Tally(), queue.Queue[str](), list[Fault]()
        stop_faults, done_submitting = threading.Event(), threading.Event()
        started = time.monotonic()
        threads = [
            threading.Thread(target=inject_faults, args=(system, tally), daemon=True,
                             kwargs={"every_s": fault_every_s, "started": started, "stop": stop_faults,
                                     "faults": faults}),
            threading.Thread(target=canceller, args=(system.port, tally, cancels, done_submitting), daemon=True),
        ]
        for thread in threads:
            thread.start()
        _submit(system, tally, cancels, tasks=tasks, rate=rate, say=say,
                more=lambda: len(faults) < min_faults)
        done_submitting.set()
        stop_faults.set()
        for thread in threads:
            thread.join()
        seconds = time.monotonic() - started
        say(f"submitted; {len(faults)} faults injected; waiting for the tasks to finish")
        # Long enough for a redelivery, and for the autoscaler to republish a task whose message the
        # broker lost once its pool is empty.
        settle_s = wait_until_settled(system, tally, quiet_s=max(2 * ack_wait_s, LOST_MESSAGE_AFTER_S + 15.0),
                                      say=say)
        report = count(system, tally, faults, seconds=seconds, settle_s=settle_s)
        if not report.ok:
            say(f"neutrino dev's log: {system.log_path} (tail)\n" + system.log_path.read_text(errors="replace")[-4000:])
        return report


def _submit(system: System, tally: Tally, cancels: queue.Queue[str], *, tasks: int, rate: float,
            say: Callable[[str], None], more: Callable[[], bool], threads: int = 4) -> None:
    """`threads` submitters share the target rate, each picking kinds by the weights of MIX, until
    `tasks` were accepted and `more()` is false."""
    kinds, weights = zip(*MIX, strict=True)
    lock = threading.Lock()
    submitted = [0]
    every = threads / rate

    def loop() -> None:
        submitter = Submitter(system, tally, cancels)
        next_at = time.monotonic()
        while True:
            with lock:
                if submitted[0] >= tasks and not more():
                    return
            kind = random.choices(kinds, weights)[0]
            size = random.randint(5, 50) if kind == "batch" else 1
            accepted = submitter.submit(kind, size)
            with lock:
                submitted[0] += accepted
            next_at += every * max(1, accepted)
            time.sleep(max(0.0, next_at - time.monotonic()))

    pool = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    while any(thread.is_alive() for thread in pool):
        time.sleep(5)
        say(f"  {submitted[0]:,} of {tasks:,} accepted")
    for thread in pool:
        thread.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000, help="tasks to have accepted (default 2000)")
    parser.add_argument("--rate", type=float, default=100.0, help="tasks submitted per second (default 100)")
    parser.add_argument("--fault-every", type=float, default=4.0, help="mean seconds between faults (default 4)")
    parser.add_argument("--faults", type=int, default=len(FAULTS),
                        help=f"go on submitting until at least this many faults were injected (default {len(FAULTS)}, "
                             "one of each kind)")
    parser.add_argument("--ack-wait", type=float, default=5.0, help="NEUTRINO_ACK_WAIT_S of the system (default 5)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (printed; default: a new one)")
    parser.add_argument("--keep-database", action="store_true", help="keep the scratch PostgreSQL database")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    random.seed(seed)
    print(f"chaos seed {seed} (rerun the same choices with --seed {seed})")
    report = run(tasks=args.tasks, rate=args.rate, fault_every_s=args.fault_every, min_faults=args.faults,
                 ack_wait_s=args.ack_wait,
                 database_url=os.environ.get("DATABASE_URL") or None, keep=args.keep_database)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps({**asdict(report), "ok": report.ok, "seed": seed}, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
