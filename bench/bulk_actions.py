"""Bulk actions at 100,000 matching tasks: the confirmation's count, a bulk cancel and a bulk delete worked by a
real `neutrino scheduler` process, and the task list page's latency while they run.

    python bench/bulk_actions.py                      # 100,000 matching + 100,000 other tasks, fresh SQLite
    python bench/bulk_actions.py --rows 20000 --other 0
    DATABASE_URL=postgres://postgres@127.0.0.1/bench python bench/bulk_actions.py   # an empty database

It prints figures; it never passes or fails on time. The page is fetched through Django's test client in
this process (its queries and rendering, not the HTTP server), signed in as a superuser, as fast as it
answers: before the action (baseline), and while the scheduler works it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 10_000
FUNCTION = "bulk_target"


def setup(args: argparse.Namespace) -> dict[str, str]:
    sys.path.insert(0, str(ROOT))
    tmp = Path(tempfile.mkdtemp(prefix="neutrino-bulk-bench-"))
    env = {"DJANGO_SETTINGS_MODULE": "neutrino_site.settings", "NEUTRINO_TASK_MODULES": "examples.tasks",
           "NEUTRINO_DATA_DIR": str(tmp), "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
           "DJANGO_ALLOWED_HOSTS": "testserver,localhost,127.0.0.1", "NEUTRINO_LOG_LEVEL": "WARNING"}
    if not os.environ.get("DATABASE_URL"):
        env["NEUTRINO_SQLITE_PATH"] = str(tmp / "bulk.db")
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return {**os.environ, **env, "PYTHONPATH": str(ROOT)}


def fill(matching: int, other: int) -> None:
    """`matching` queued tasks of FUNCTION and `other` completed tasks of other functions, the last day."""
    from django.db import connection, transaction
    from django.utils import timezone

    from tasks_app.models import Task

    now = timezone.now()
    started = time.perf_counter()
    for function, status, count in ((FUNCTION, "queued", matching), ("other_fn", "completed", other)):
        for offset in range(0, count, CHUNK):
            rows = [Task(id=uuid.uuid4(), function_name=function, status=status, pool="async", execution_mode="async",
                         created_at=now - timedelta(seconds=86_400 * (offset + i) / max(count, 1)), timeout_ms=10_000,
                         args={"n": offset + i}, attempt=1, created_by="bench")
                    for i in range(min(CHUNK, count - offset))]
            with transaction.atomic():
                Task.objects.bulk_create(rows, batch_size=2_000)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE tasks_app_task")
    print(f"filled {matching:,} matching + {other:,} other tasks in {time.perf_counter() - started:.1f} s")


def page_latencies(client: Any, path: str, *, until: Any, at_least: int = 20) -> list[float]:
    """GET `path` again and again until `until()` is true (and at least `at_least` times); seconds each."""
    times: list[float] = []
    while len(times) < at_least or not until():
        started = time.perf_counter()
        response = client.get(path)
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, response.status_code
    return times


def describe(times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return (f"{len(times)} loads, p50 {statistics.median(times) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
            f"max {ordered[-1] * 1000:.0f} ms")


def run_action(action: str, filters: Any, client: Any, page: str) -> None:
    from django.utils import timezone

    from tasks_app.models import BulkAction
    from tasks_app.selectors.bulk import bulk_count
    from tasks_app.services.audit import Actor
    from tasks_app.services.bulk import bulk_create

    counts = []
    for _ in range(5):
        started = time.perf_counter()
        total = bulk_count(filters=filters, snapshot_at=timezone.now())
        counts.append(time.perf_counter() - started)
    print(f"{action}: the confirmation's count ({total:,} tasks): median {statistics.median(counts) * 1000:.1f} ms "
          f"of 5")
    started = time.perf_counter()
    bulk = bulk_create(filters=filters, action=action, actor=Actor(label="user:bench"), expected_count=total)

    def finished() -> bool:
        return BulkAction.objects.get(id=bulk.id).finished

    during = page_latencies(client, page, until=finished, at_least=5)
    elapsed = time.perf_counter() - started
    bulk = BulkAction.objects.get(id=bulk.id)
    print(f"{action}: {bulk.status}, {bulk.done:,} done, {bulk.failed:,} not, in {elapsed:.1f} s "
          f"({bulk.done / elapsed:,.0f} tasks/s, from asking to done)")
    print(f"  task list page while it ran: {describe(during)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="matching tasks (default 100,000)")
    parser.add_argument("--other", type=int, default=100_000, help="other tasks in the table (default 100,000)")
    args = parser.parse_args()
    env = setup(args)
    from django.contrib.auth import get_user_model
    from django.test import Client

    from tasks_app.selectors.tasks import TaskFilters
    from workers.engine.nats_server import NatsServer

    fill(args.rows, args.other)
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("bench", password=None))
    page = f"/?function={FUNCTION}"
    print(f"task list page ({page}) before: {describe(page_latencies(client, page, until=lambda: True, at_least=30))}")
    store = Path(env["NEUTRINO_DATA_DIR"])
    nats = NatsServer(store_dir=store / "nats", log_file=store / "nats.log").start()
    log = open(store / "scheduler.log", "wb")  # noqa: SIM115
    scheduler = subprocess.Popen([sys.executable, "-m", "neutrino_site.cli", "scheduler"], cwd=ROOT, stdout=log,
                                 stderr=subprocess.STDOUT, env={**env, "NEUTRINO_NATS_URL": nats.url})
    try:
        run_action("cancel", TaskFilters(function=FUNCTION, status="queued"), client, page)
        run_action("delete", TaskFilters(function=FUNCTION, status="cancelled"), client, page)
    finally:
        scheduler.terminate()
        scheduler.wait(30)
        log.close()
        nats.stop()


if __name__ == "__main__":
    main()
