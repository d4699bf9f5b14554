"""Delayed tasks: how late they are queued and started, and what a day of waiting rows costs the database.

    python bench/delayed_firing.py                          # 10,000 due in one minute; 1,000,000 waiting
    python bench/delayed_firing.py --tasks 2000 --window-s 20 --waiting 100000
    DATABASE_URL=postgres://postgres@127.0.0.1/bench python bench/delayed_firing.py   # a scratch database

1. Lateness. Starts nats-server, the HTTP server, one async worker and `neutrino scheduler`, each a real
   process (bench/stack.py), submits `--tasks` no-op tasks with run_at spread evenly over one window of
   `--window-s` seconds that starts once they are all submitted (batches of `--batch`, one run_at each),
   waits until all completed, and prints queued_at - run_at and started_at - run_at: p50, p99, max.
2. Waiting rows. In a second, fresh database (SQLite unless DATABASE_URL is set) it bulk-inserts
   `--waiting` scheduled rows due over the next 24 h, then times the release job's due query (the 500
   soonest due rows) and a whole release round with none due (what each 0.2 s tick costs), the expiry
   job's round, with their query plans, and the table's size on SQLite.

It prints figures and never passes or fails on them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import CLI, Stack, neutrino_stack  # noqa: E402
from bench.sync_latency import percentile  # noqa: E402

if TYPE_CHECKING:
    from django.db.models import Field

REPEAT = 20


# --- 1. lateness ---------------------------------------------------------------------------------


def submit_window(stack: Stack, *, tasks: int, batch: int, window_s: float, clients: int = 4) -> datetime:
    """Submit `tasks` delayed no-ops in batches, due evenly over a window that starts after the submits."""
    batches = (tasks + batch - 1) // batch

    def send(chunk: list[dict[str, Any]]) -> None:
        with httpx.Client(base_url=stack.url, timeout=60) as client:
            for body in chunk:
                response = client.post("/api/async_noop/batch", json=body)
                if response.status_code != 202:
                    raise RuntimeError(f"batch answered {response.status_code}: {response.text[:200]}")

    def send_all(bodies: list[dict[str, Any]]) -> None:
        threads = [threading.Thread(target=send, args=(bodies[i::clients],)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    # Warm every HTTP process first (its first request connects to NATS and the database: seconds). These
    # tasks wait a day: they never count.
    send_all([{"items": [{"args": {}}], "delay_s": 86_400}] * clients * 4)
    # Leave time to submit them all before the first is due (well over 1,000 a second in batches).
    start = datetime.now(UTC) + timedelta(seconds=3 + tasks / 1000)
    send_all([{"items": [{"args": {}}] * min(batch, tasks - i * batch),
               "run_at": (start + timedelta(seconds=window_s * i / batches)).isoformat()} for i in range(batches)])
    if datetime.now(UTC) > start:
        print(f"  warning: submitting took past the window's start by {datetime.now(UTC) - start}", flush=True)
    return start


def rows_of(stack: Stack, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    url = os.environ.get("DATABASE_URL")
    if url:
        import psycopg

        with psycopg.connect(url) as conn:
            return list(conn.execute(sql, params).fetchall())
    import sqlite3

    with sqlite3.connect(stack.data / "neutrino.db", timeout=30) as conn:
        return list(conn.execute(sql.replace("%s", "?"), params).fetchall())


def as_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def lateness(args: argparse.Namespace) -> None:
    with neutrino_stack(http_workers=2, concurrency=args.concurrency) as stack:
        scheduler = subprocess.Popen([*CLI, "scheduler"], env=stack.env, cwd=ROOT)
        try:
            print(f"lateness: {args.tasks:,} delayed no-op tasks due over {args.window_s:g} s, 1 worker "
                  f"(concurrency {args.concurrency}), 1 scheduler, {stack.database()}, {os.cpu_count()} CPUs",
                  flush=True)
            started = time.perf_counter()
            start = submit_window(stack, tasks=args.tasks, batch=args.batch, window_s=args.window_s)
            print(f"  submitted in {time.perf_counter() - started:.1f} s; first due at {start:%H:%M:%S}", flush=True)
            count_sql = "SELECT COUNT(*) FROM tasks_app_task WHERE function_name = 'async_noop' AND status = %s"
            deadline = time.monotonic() + args.window_s + 300
            while rows_of(stack, count_sql, ("completed",))[0][0] < args.tasks and time.monotonic() < deadline:
                time.sleep(0.5)
            rows = rows_of(stack, "SELECT run_at, queued_at, started_at FROM tasks_app_task "
                                  "WHERE function_name = 'async_noop' AND status = 'completed' "
                                  "AND run_at IS NOT NULL")
        finally:
            scheduler.terminate()
            scheduler.wait(30)
    queued = [(as_time(q) - as_time(r)).total_seconds() * 1000 for r, q, _ in rows]
    begun = [(as_time(s) - as_time(r)).total_seconds() * 1000 for r, _, s in rows]
    print(f"  completed {len(rows):,} of {args.tasks:,} (a task due before its submit queues at once and "
          "has no run_at: not counted)")
    for label, values in (("run_at -> queued ", queued), ("run_at -> started", begun)):
        print(f"  {label}  p50 {statistics.median(values):7.1f} ms   p99 {percentile(values, 99):7.1f} ms   "
              f"max {max(values):7.1f} ms   min {min(values):6.1f} ms", flush=True)
    early = sum(1 for value in begun if value < 0)
    print(f"  started before run_at: {early}")


# --- 2. a day of waiting rows ---------------------------------------------------------------------


def setup_database() -> str:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "neutrino_site.settings")
    os.environ.setdefault("NEUTRINO_TASK_MODULES", "bench.bench_tasks")
    if not os.environ.get("DATABASE_URL"):
        path = Path(tempfile.mkdtemp(prefix="neutrino-bench-")) / "waiting.db"
        os.environ["NEUTRINO_SQLITE_PATH"] = str(path)
        os.environ.setdefault("NEUTRINO_DATA_DIR", str(path.parent))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    return connection.vendor


def insert_waiting(count: int, *, now: datetime, chunk: int = 10_000) -> float:
    """Bulk-insert `count` scheduled rows due evenly over the next 24 h (a quarter expiring); rows/s."""
    from django.db import connection, transaction

    from tasks_app.models import Task, TaskStatus

    template = Task(function_name="async_noop", status=TaskStatus.SCHEDULED, pool="async", execution_mode="async",
                    created_at=now, timeout_ms=60_000, args={}, created_by="bench")
    fields = Task._meta.concrete_fields
    constant = {f.attname: f.get_db_prep_save(getattr(template, f.attname), connection) for f in fields}
    id_field, run_at, expires_at = (cast("Field[Any, Any]", Task._meta.get_field(n))
                                    for n in ("id", "run_at", "expires_at"))
    quote = connection.ops.quote_name
    sql = (f"INSERT INTO {quote(Task._meta.db_table)} ({', '.join(quote(cast(str, f.column)) for f in fields)}) "
           f"VALUES ({', '.join(['%s'] * len(fields))})")
    started = time.perf_counter()
    for offset in range(0, count, chunk):
        params = []
        for i in range(offset, min(count, offset + chunk)):
            due = now + timedelta(seconds=86_400 * i / count)
            values = {**constant, "id": id_field.get_db_prep_save(uuid.uuid4(), connection),
                      "run_at": run_at.get_db_prep_save(due, connection),
                      "expires_at": expires_at.get_db_prep_save(due + timedelta(hours=1), connection)
                      if i % 4 == 0 else None}
            params.append([values[f.attname] for f in fields])
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(sql, params)
    rate = count / (time.perf_counter() - started)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {quote(Task._meta.db_table)}")
    else:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return rate


def timed(fn: Any, repeat: int = REPEAT) -> tuple[float, float]:
    """Median and max of `repeat` runs, in ms."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), max(samples)


def plan(queryset: Any) -> str:
    from django.db import connection

    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            return "; ".join(str(row[-1]) for row in cursor.fetchall())
        cursor.execute(f"EXPLAIN {sql}", params)
        return " / ".join(row[0].strip() for row in cursor.fetchall())


def waiting(args: argparse.Namespace) -> None:
    vendor = setup_database()
    from django.db import connection, transaction
    from django.utils import timezone

    from tasks_app.models import Task, TaskStatus
    from tasks_app.services.delays import move_rows, tasks_expire_due, tasks_release_due
    from workers.engine.broker.publisher import Publisher

    now = timezone.now()
    print(f"\nwaiting rows: {args.waiting:,} scheduled tasks due over the next 24 h, {vendor}", flush=True)
    rate = insert_waiting(args.waiting, now=now)
    print(f"  bulk insert: {rate:,.0f} rows/s", flush=True)

    def due(at: datetime) -> Any:
        return Task.objects.filter(status=TaskStatus.SCHEDULED, run_at__lte=at).order_by("run_at")

    soon = now + timedelta(seconds=86_400 * 500 / args.waiting)  # the 500 soonest are due
    for label, at in (("none due  ", now - timedelta(seconds=1)), ("500 due   ", soon)):
        median, worst = timed(lambda at=at: list(due(at).values_list("id", flat=True)[:500]))
        print(f"  release's due query, {label}: median {median:.2f} ms, max {worst:.2f} ms", flush=True)
    print(f"    plan: {plan(due(soon).values('id')[:500])}")

    def claim_and_roll_back() -> None:  # the release's UPDATE of 500 rows, undone
        with transaction.atomic():
            move_rows(due(soon), chunk=500, statuses=[TaskStatus.SCHEDULED], set_values={"status": "pending"})
            transaction.set_rollback(True)

    median, worst = timed(claim_and_roll_back)
    print(f"  release's UPDATE of 500 due rows (rolled back): median {median:.2f} ms, max {worst:.2f} ms")

    from pools_app.catalog import PoolTable
    from tasks_app.adapters.events import PublishedTaskEvents
    from tasks_app.adapters.ledger import LedgerWriter
    from tasks_app.core.ports import Ports

    publisher = Publisher(None, timeout_s=1.0)  # nothing is published: no row is due in these rounds
    ports = Ports(broker=None, publisher=publisher, events=PublishedTaskEvents(publisher, None),
                  ledger=LedgerWriter(queue_size=10, enabled=False), runner=None, pools=PoolTable())
    median, worst = timed(lambda: tasks_release_due(ports=ports, now=now - timedelta(seconds=1)))
    print(f"  a release round with none due (each 0.2 s tick): median {median:.2f} ms, max {worst:.2f} ms")
    median, worst = timed(lambda: tasks_expire_due(ports=ports, now=now))
    expiring = Task.objects.filter(status=TaskStatus.QUEUED, expires_at__lte=now).order_by("expires_at")
    print(f"  an expiry round with none due (each 1 s tick): median {median:.2f} ms, max {worst:.2f} ms")
    print(f"    plan (one per waiting status): {plan(expiring.values('id')[:500])}")
    if vendor == "sqlite":
        path = Path(os.environ["NEUTRINO_SQLITE_PATH"])
        print(f"  SQLite file: {path.stat().st_size / 2**20:,.0f} MiB "
              f"({path.stat().st_size / args.waiting:,.0f} bytes a row, all indexes included)")
        for name, size in sqlite_sizes()[:4]:
            print(f"    {name}: {size / 2**20:,.1f} MiB")
    else:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_total_relation_size('tasks_app_task'), pg_relation_size('idx_status_run_at')")
            total, index = cursor.fetchone()
        print(f"  table with indexes: {total / 2**20:,.0f} MiB; idx_status_run_at {index / 2**20:,.1f} MiB")


def sqlite_sizes() -> list[tuple[str, int]]:
    """The largest tables and indexes of the SQLite file (its `dbstat` table; empty where it is not built in)."""
    from django.db import DatabaseError, connection

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC")
            return [(str(name), int(size)) for name, size in cursor.fetchall()]
    except DatabaseError:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000, help="delayed tasks due in the window")
    parser.add_argument("--window-s", type=float, default=60.0, help="the window they are due in")
    parser.add_argument("--batch", type=int, default=20, help="tasks per batch request (one run_at each)")
    parser.add_argument("--concurrency", type=int, default=4, help="the worker's concurrency")
    parser.add_argument("--waiting", type=int, default=1_000_000, help="scheduled rows for part 2 (0: skip)")
    parser.add_argument("--skip-lateness", action="store_true")
    args = parser.parse_args()
    if not args.skip_lateness:
        lateness(args)
    if args.waiting:
        waiting(args)


if __name__ == "__main__":
    main()
