"""The dashboard's queries at scale: fill a database with tasks, time each query, show each plan.

    python bench/dashboard_scale.py                     # 1,000,000 tasks in a fresh SQLite file
    python bench/dashboard_scale.py --rows 200000
    DATABASE_URL=postgres://postgres@127.0.0.1/bench python bench/dashboard_scale.py

It times what the dashboard runs (the dashboard's own selectors, not copies): the task list's first
and second page, each filter, the id search, the counters per status and the overview, and prints
each query's plan (SQLite: EXPLAIN QUERY PLAN; PostgreSQL: EXPLAIN) so that index use can be read
off. It prints figures; it never passes or fails on time.

On PostgreSQL it fills the database DATABASE_URL names, and refuses one that already holds tasks
unless --reuse is given (then the rows there are measured as they are).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 10_000
REPEAT = 5

FUNCTIONS = [f"fn_{i:02d}" for i in range(20)]
RARE_FUNCTION = "rare_fn"  # 0.1 % of the rows: a filter that must not scan the table
STATUSES = [("completed", 0.90), ("failed", 0.05), ("cancelled", 0.01), ("queued", 0.02),
            ("pending", 0.01), ("running", 0.01)]
POOLS = [("fast", "sync", 0.60), ("async", "async", 0.35), ("gpu", "gpu", 0.05)]
COLUMNS = ("id", "function_name", "status", "pool", "execution_mode", "created_at", "queued_at", "started_at",
           "completed_at", "duration_ms", "worker_id", "attempt", "max_retries", "timeout_ms", "args", "result",
           "error", "error_type", "traceback", "progress", "progress_message", "retry_of_id", "idempotency_key",
           "cancel_requested", "created_by")


def _setup(args: argparse.Namespace) -> str:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "neutrino_site.settings")
    os.environ.setdefault("NEUTRINO_TASK_MODULES", "examples.tasks")
    if not os.environ.get("DATABASE_URL"):
        path = Path(args.db) if args.db else Path(tempfile.mkdtemp(prefix="neutrino-bench-")) / "dashboard.db"
        os.environ["NEUTRINO_SQLITE_PATH"] = str(path)
        os.environ.setdefault("NEUTRINO_DATA_DIR", str(path.parent))
    import django

    django.setup()
    from django.db import connection

    return connection.vendor


def _pick(weighted: list[tuple[Any, ...]], r: float) -> tuple[Any, ...]:
    for item in weighted:
        if r < item[-1]:
            return item
        r -= item[-1]
    return weighted[-1]


def fill(rows: int, *, now: datetime, days: float = 30.0) -> None:
    """Insert `rows` tasks in the order they would arrive: 98 % spread over the last `days`, 2 % in the
    last hour (a busy hour for the overview), in chunks of raw executemany."""
    from django.db import connection, transaction

    from tasks_app.models import Task

    ops = connection.ops
    id_field = Task._meta.get_field("id")
    rng = random.Random(42)
    span_s = days * 86400
    placeholders = ", ".join(["%s"] * len(COLUMNS))
    sql = f"INSERT INTO tasks_app_task ({', '.join(COLUMNS)}) VALUES ({placeholders})"
    empty_args = ops.adapt_json_value({"n": 1}, None)
    result = ops.adapt_json_value({"ok": True}, None)
    null_json = ops.adapt_json_value(None, None)
    started = time.perf_counter()
    for offset in range(0, rows, CHUNK):
        batch = []
        for i in range(offset, min(rows, offset + CHUNK)):
            created = _arrival(i, rows, now=now, span_s=span_s)
            status = _pick(STATUSES, rng.random())[0]
            pool, mode, _ = _pick(POOLS, rng.random())
            function = RARE_FUNCTION if i % 1000 == 0 else FUNCTIONS[rng.randrange(len(FUNCTIONS))]
            finished = status in ("completed", "failed", "cancelled")
            duration = rng.lognormvariate(3, 1) if finished else None
            task_id = uuid.UUID(int=rng.getrandbits(128), version=4)
            batch.append((
                id_field.get_db_prep_value(task_id, connection),
                function, status, pool, mode,
                ops.adapt_datetimefield_value(created),
                ops.adapt_datetimefield_value(created) if mode != "sync" else None,
                ops.adapt_datetimefield_value(created) if status != "pending" and status != "queued" else None,
                ops.adapt_datetimefield_value(created + timedelta(milliseconds=duration or 0)) if finished else None,
                duration, "host:1" if status != "pending" else "", 1, 0, 10_000,
                empty_args, result if status == "completed" else null_json,
                "boom" if status == "failed" else "", "ValueError" if status == "failed" else "", "",
                None, "", None, None, False, "bench",
            ))
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(sql, batch)
        done = min(rows, offset + CHUNK)
        if done % 100_000 == 0 or done == rows:
            rate = done / (time.perf_counter() - started)
            print(f"  inserted {done:,} rows ({rate:,.0f} rows/s)", flush=True)
    if connection.vendor != "sqlite":
        vacuum_postgres()


def vacuum_postgres() -> None:
    """What autovacuum does soon after a bulk load: statistics, and the visibility map that lets
    PostgreSQL count from an index alone (an index-only scan)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE tasks_app_task")


def analyze_sqlite() -> None:
    """Give SQLite's planner statistics (Django never runs ANALYZE, so plans without them are the usual case)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def _arrival(i: int, rows: int, *, now: datetime, span_s: float) -> datetime:
    """The i-th task's created_at: oldest first, the last 2 % of the rows within the last hour."""
    busy = max(1, rows // 50)
    if i < rows - busy:
        return now - timedelta(seconds=span_s) + timedelta(seconds=(span_s - 3600) * i / (rows - busy))
    return now - timedelta(seconds=3600 * (rows - i) / busy)


def explain(sql: str) -> list[str]:
    from django.db import connection

    prefix = "EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN "
    with connection.cursor() as cursor:
        cursor.execute(prefix + sql)
        rows = cursor.fetchall()
    if connection.vendor == "sqlite":
        return [str(row[-1]) for row in rows]
    return [str(row[0]) for row in rows]


def measure(name: str, fn: Callable[[], Any], *, show_plans: bool = True) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        fn()
    times = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    print(f"{name:<44} median {statistics.median(times):8.2f} ms   min {min(times):8.2f} ms"
          f"   ({len(captured.captured_queries)} quer{'y' if len(captured.captured_queries) == 1 else 'ies'})")
    if not show_plans:
        return
    seen = set()
    for query in captured.captured_queries:
        plan = tuple(explain(query["sql"]))
        if plan in seen:
            continue
        seen.add(plan)
        for line in plan:
            print(f"    | {line}")


def run(args: argparse.Namespace, vendor: str) -> None:
    from django.core.management import call_command
    from django.utils import timezone

    from tasks_app.models import Task
    from tasks_app.selectors.dashboard import (
        list_query_from_params,
        task_overview,
        task_page,
        task_status_counts,
    )

    call_command("migrate", interactive=False, verbosity=0)
    existing = Task.objects.count()
    now = timezone.now()
    if existing and vendor != "sqlite" and not args.reuse:
        raise SystemExit(f"the database already holds {existing:,} tasks; pass --reuse to measure them as they are")
    if existing < args.rows and not (args.reuse and existing):
        print(f"== filling {vendor} with {args.rows - existing:,} tasks")
        fill(args.rows - existing, now=now)
    if args.analyze and vendor == "sqlite":
        analyze_sqlite()
    if args.reuse and vendor != "sqlite":
        vacuum_postgres()
    total = Task.objects.count()
    stats = " (with ANALYZE statistics)" if args.analyze and vendor == "sqlite" else ""
    print(f"== {total:,} tasks on {vendor}{stats}; each query {REPEAT} times after one warm-up\n")

    def page(**params: str) -> Callable[[], Any]:
        query = list_query_from_params(params, now=timezone.now())
        return lambda: task_page(query=query)

    def counts(**params: str) -> Callable[[], Any]:
        query = list_query_from_params(params, now=timezone.now())
        return lambda: task_status_counts(filters=query.filters)

    first = task_page(query=list_query_from_params({}, now=now))
    sample = Task.objects.order_by("-created_at").values_list("id", flat=True)[5000]
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("list: newest 50", page()),
        ("list: second page (cursor)", page(cursor=first.next_cursor or "")),
        ("list: status=failed", page(status="failed")),
        ("list: status=running", page(status="running")),
        ("list: function=fn_03", page(function="fn_03")),
        (f"list: function={RARE_FUNCTION} (0.1 %)", page(function=RARE_FUNCTION)),
        ("list: function=no_such_function", page(function="no_such_function")),
        ("list: pool=gpu", page(pool="gpu")),
        ("list: pool=no_such_pool", page(pool="no_such_pool")),
        ("list: mode=gpu", page(mode="gpu")),
        ("list: last hour", page(range="1h")),
        ("list: status=failed + function=fn_03", page(status="failed", function="fn_03")),
        ("list: status=failed + last hour", page(status="failed", range="1h")),
        ("search: id prefix (6 hex digits)", page(q=str(sample)[:6])),
        ("search: full id", page(q=str(sample))),
        ("counters: all tasks", counts()),
        ("counters: function=fn_03", counts(function="fn_03")),
        ("counters: pool=gpu", counts(pool="gpu")),
        ("counters: last hour", counts(range="1h")),
        ("overview: last hour", lambda: task_overview(now=timezone.now())),
    ]
    for name, fn in cases:
        measure(name, fn, show_plans=not args.no_plans)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="tasks to insert (default 1,000,000)")
    parser.add_argument("--db", help="SQLite file to use (kept; reused when it holds enough rows)")
    parser.add_argument("--reuse", action="store_true", help="PostgreSQL: measure the tasks already there")
    parser.add_argument("--no-plans", action="store_true", help="print the timings only")
    parser.add_argument("--analyze", action="store_true", help="SQLite: run ANALYZE first (planner statistics)")
    args = parser.parse_args(argv)
    vendor = _setup(args)
    run(args, vendor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
