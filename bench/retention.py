"""Sync calls while retention deletes a million old rows.

    python bench/retention.py [--rows 1000000] [--keep 10000] [--calls 3000]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test python bench/retention.py

Fills a scratch database (a temporary SQLite file; on PostgreSQL a database `retention_bench` on the server
DATABASE_URL names, created here and dropped at the end) with --rows finished tasks older than the
default policy (31-120 days old; 1 % with an attempt row, so the cascade has work) and --keep recent ones.
It starts `neutrino serve --mode http` as bench/sync_latency.py does and times no-op sync calls one after
the other: first with nothing else running, then while `neutrino prune` deletes the old rows (the
scheduler's retention service, run until nothing is left: batches of up to 500 ids, each followed by a
pause as long as it took, 50 ms at least; the scheduler runs the same batches, at most 10,000 rows or 2 s a
round). It prints the calls' p50/p95/p99/max, the deletion rate, the number of batches, the longest batch
(its transaction, which holds SQLite's write lock) and the longest DELETE of task rows.
It prints figures; it never passes or fails on them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import serve_env  # noqa: E402
from workers.engine.nats_server import free_port, wait_for_port  # noqa: E402
from workers.engine.processes import stop_process  # noqa: E402

CLI = [sys.executable, "-m", "neutrino_site.cli"]
CHUNK = 10_000
SCRATCH_DB = "retention_bench"
BODY = json.dumps({"args": {}}).encode()
HEADERS = {"Content-Type": "application/json"}


@contextmanager
def scratch_database() -> Iterator[dict[str, str]]:
    """The environment naming a fresh database: SQLite in a temporary folder, or `retention_bench` on the
    PostgreSQL server of DATABASE_URL (never the database it names)."""
    url = os.environ.get("DATABASE_URL", "").strip()
    with tempfile.TemporaryDirectory(prefix="neutrino-bench-") as tmp:
        if not url:
            yield {"NEUTRINO_DATA_DIR": tmp, "NEUTRINO_SQLITE_PATH": str(Path(tmp) / "retention.db")}
            return
        import psycopg
        from psycopg import sql

        parts = urlsplit(url)
        admin = urlunsplit(parts._replace(path="/postgres"))
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(SCRATCH_DB))
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(drop)
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(SCRATCH_DB)))
        try:
            yield {"NEUTRINO_DATA_DIR": tmp, "DATABASE_URL": urlunsplit(parts._replace(path=f"/{SCRATCH_DB}"))}
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(drop)


def fill(*, old_rows: int, keep: int) -> None:
    """Insert the rows with raw executemany in chunks: each column prepared by its model field from one
    template row, so columns added later need nothing here."""
    from django.db import connection, transaction
    from django.utils import timezone

    from tasks_app.models import Task, TaskAttempt

    now = timezone.now()
    template = Task(function_name="noop", status="completed", pool="fast", execution_mode="sync", created_at=now,
                    started_at=now, completed_at=now, duration_ms=0.05, worker_id="bench:1", attempt=1,
                    timeout_ms=5000, args={}, result=None)
    fields = Task._meta.concrete_fields
    base = [field.get_db_prep_save(getattr(template, field.attname), connection) for field in fields]
    at = {field.attname: index for index, field in enumerate(fields)}
    quote = connection.ops.quote_name
    insert = (f"INSERT INTO {quote(Task._meta.db_table)} ({', '.join(quote(str(f.column)) for f in fields)}) "
              f"VALUES ({', '.join(['%s'] * len(fields))})")
    attempt_fields = [f for f in TaskAttempt._meta.concrete_fields if not f.primary_key]
    insert_attempt = (f"INSERT INTO {quote(TaskAttempt._meta.db_table)} "
                      f"({', '.join(quote(str(f.column)) for f in attempt_fields)}) "
                      f"VALUES ({', '.join(['%s'] * len(attempt_fields))})")
    rng = random.Random(7)
    id_field = Task._meta.pk
    started = time.perf_counter()
    total = old_rows + keep
    for offset in range(0, total, CHUNK):
        batch, attempts = [], []
        for i in range(offset, min(total, offset + CHUNK)):
            old = i < old_rows
            age = timedelta(days=rng.uniform(31, 120)) if old else timedelta(seconds=rng.uniform(0, 20 * 86400))
            created = now - age
            task_id = uuid.UUID(int=rng.getrandbits(128), version=4)
            row = list(base)
            row[at["id"]] = id_field.get_db_prep_value(task_id, connection)
            row[at["status"]] = "failed" if i % 20 == 0 else "completed"
            row[at["created_at"]] = connection.ops.adapt_datetimefield_value(created)
            row[at["started_at"]] = row[at["completed_at"]] = row[at["created_at"]]
            batch.append(row)
            if i % 100 == 0:
                attempts.append(TaskAttempt(task_id=task_id, attempt=1, worker_id="bench:1", started_at=created,
                                            ended_at=created, outcome="retried", error="boom"))
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(insert, batch)
            cursor.executemany(insert_attempt, [
                [f.get_db_prep_save(getattr(a, f.attname), connection) for f in attempt_fields] for a in attempts])
        done = min(total, offset + CHUNK)
        if done % 200_000 == 0 or done == total:
            print(f"  inserted {done:,} rows ({done / (time.perf_counter() - started):,.0f} rows/s)", flush=True)
    with connection.cursor() as cursor:  # what autovacuum / a later ANALYZE would give the planner
        cursor.execute("ANALYZE" if connection.vendor == "sqlite" else f"VACUUM ANALYZE {Task._meta.db_table}")


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


def summary(samples: list[float]) -> str:
    return (f"n={len(samples):<6} p50={statistics.median(samples):6.2f} ms  p95={percentile(samples, 95):6.2f} ms  "
            f"p99={percentile(samples, 99):6.2f} ms  max={max(samples):7.2f} ms")


def call(conn: http.client.HTTPConnection) -> float:
    began = time.perf_counter()
    conn.request("POST", "/api/noop", body=BODY, headers=HEADERS)
    response = conn.getresponse()
    payload = response.read()
    if response.status != 200:
        raise RuntimeError(f"/api/noop answered {response.status}: {payload[:200]!r}")
    return (time.perf_counter() - began) * 1000


def measure(port: int, *, calls: int, env: dict[str, str]) -> int:
    """Time the calls; returns how many were made (each a recent task row of its own)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(300):  # warm every server process and child
        call(conn)
    print(f"sync no-op, nothing else running     {summary([call(conn) for _ in range(calls)])}", flush=True)
    during: list[float] = []
    prune = subprocess.Popen([*CLI, "prune", "--json"], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    while prune.poll() is None:
        during.append(call(conn))
    out, _ = prune.communicate()
    print(f"sync no-op, while `neutrino prune` runs {summary(during)}", flush=True)
    report: dict[str, Any] = json.loads(out)
    deleted = sum(report["deleted"].values())
    rate = deleted / report["elapsed_s"]
    print(f"prune: deleted {deleted:,} rows in {report['elapsed_s']:.1f} s = {rate:,.0f} rows/s "
          f"({report['batches']} batches); longest batch {report['longest_batch_s'] * 1000:.0f} ms, "
          f"longest DELETE of task rows {report['longest_delete_s'] * 1000:.0f} ms", flush=True)
    conn.close()
    return 300 + calls + len(during)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="old finished rows to delete")
    parser.add_argument("--keep", type=int, default=10_000, help="recent finished rows that stay")
    parser.add_argument("--calls", type=int, default=3000, help="sync calls of the baseline")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="gunicorn processes")
    args = parser.parse_args()
    with scratch_database() as database:
        env = {**os.environ, **serve_env(), **database, "DJANGO_SETTINGS_MODULE": "neutrino_site.settings",
               "NEUTRINO_TASK_MODULES": "bench.bench_tasks", "NEUTRINO_NATS_URL": "", "NEUTRINO_ALLOW_ANONYMOUS": "1",
               "PYTHONPATH": str(ROOT), "NEUTRINO_LOG_LEVEL": "WARNING"}
        os.environ.update(env)
        import django
        from django.core.management import call_command
        from django.db import connection

        django.setup()
        call_command("migrate", verbosity=0)
        print(f"{connection.vendor}: filling {args.rows:,} old finished tasks and {args.keep:,} recent ones "
              f"({os.cpu_count()} CPUs)", flush=True)
        fill(old_rows=args.rows, keep=args.keep)
        connection.close()
        port = free_port()
        server = subprocess.Popen([*CLI, "serve", "--mode", "http", "--host", "127.0.0.1", "--port", str(port),
                                   "--ws-port", "0", "--workers", str(args.workers)], env=env, cwd=ROOT)
        try:
            if not wait_for_port("127.0.0.1", port, 30):
                raise SystemExit("the server did not start within 30 s")
            made = measure(port, calls=args.calls, env=env)
        finally:
            stop_process(server, 30)
        from tasks_app.models import Task

        print(f"left: {Task.objects.count():,} rows; recent: {args.keep:,} filled + {made:,} calls", flush=True)
        connection.close()


if __name__ == "__main__":
    main()
