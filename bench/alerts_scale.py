"""Alerts and callbacks at scale: each alert measure and the callback scan timed on a filled task table, and
what the callbacks' partial index costs the transition that finishes a task without a callback.

    python bench/alerts_scale.py                     # 1,000,000 tasks in a fresh SQLite file
    python bench/alerts_scale.py --rows 200000 --db /tmp/alerts.db
    DATABASE_URL=postgres://postgres@127.0.0.1/bench python bench/alerts_scale.py --reuse

The table is filled as bench/dashboard_scale.py fills it (the same rows); 2,000 running tasks and 200
finished ones then get a callback_url. The measures are the selectors the scheduler runs (not copies), each
with its plan. The finishing figure runs the service workers call (`task_mark_completed`) on running rows
without a callback, with the partial index `idx_callback_due` present and dropped, alternating rounds.
It prints figures; it never passes or fails on time.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.dashboard_scale import _setup, analyze_sqlite, fill, measure

FINISH_ROUNDS = 4
FINISH_PER_ROUND = 2_000


class _NoEvents:
    def emit(self, task_id: str, status: str, **extra: Any) -> None:
        pass


def _give_callbacks(now: Any) -> None:
    from tasks_app.models import Task

    running = list(Task.objects.filter(status="running").order_by().values_list("id", flat=True)[:2000])
    finished = list(Task.objects.filter(status="completed").order_by().values_list("id", flat=True)[:200])
    Task.objects.filter(id__in=running).update(callback_url="http://93.184.216.34/cb")
    Task.objects.filter(id__in=finished).update(callback_url="http://93.184.216.34/cb")


def _finish_cost(vendor: str) -> None:
    """Median µs per task_mark_completed of a running row without a callback, with the partial index and without."""
    from django.db import connection

    from tasks_app.models import Task
    from tasks_app.services.tasks import task_mark_completed

    create = ('CREATE INDEX "idx_callback_due" ON "tasks_app_task" ("status") WHERE "callback_url" IS NOT NULL')
    figures: dict[str, list[float]] = {"with idx_callback_due": [], "without": []}
    for round_no in range(FINISH_ROUNDS * 2):
        label = "with idx_callback_due" if round_no % 2 == 0 else "without"
        with connection.cursor() as cursor:
            cursor.execute('DROP INDEX IF EXISTS "idx_callback_due"')
            if label != "without":
                cursor.execute(create)
        # Completed rows made running again (untimed), a different slice each round.
        ids = [str(i) for i in Task.objects.filter(status="completed", callback_url__isnull=True).order_by()
               .values_list("id", flat=True)[round_no * FINISH_PER_ROUND:(round_no + 1) * FINISH_PER_ROUND]]
        Task.objects.filter(id__in=ids).update(status="running", attempt=1)
        started = time.perf_counter()
        for task_id in ids:
            task_mark_completed(events=_NoEvents(), task_id=task_id, attempt=1, result={"ok": True},  # type: ignore[arg-type]
                                duration_ms=1.0, worker_id="bench:1")
        figures[label].append((time.perf_counter() - started) / len(ids) * 1e6)
    with connection.cursor() as cursor:
        cursor.execute('DROP INDEX IF EXISTS "idx_callback_due"')
        cursor.execute(create)
    for label, values in figures.items():
        print(f"task_mark_completed, no callback, {label:<22} median {statistics.median(values):7.1f} µs/task "
              f"(rounds: {', '.join(f'{v:.1f}' for v in values)})")


def run(args: argparse.Namespace, vendor: str) -> None:
    from django.core.management import call_command
    from django.utils import timezone

    from tasks_app.alert_models import AlertKind, AlertRule
    from tasks_app.models import Task
    from tasks_app.selectors.alerts import alert_measure
    from tasks_app.services.webhooks import callbacks_collect

    call_command("migrate", interactive=False, verbosity=0)
    now = timezone.now()
    existing = Task.objects.count()
    if existing and vendor != "sqlite" and not args.reuse:
        raise SystemExit(f"the database already holds {existing:,} tasks; pass --reuse to measure them as they are")
    if existing < args.rows:
        print(f"== filling {vendor} with {args.rows - existing:,} tasks")
        fill(args.rows - existing, now=now)
    if not Task.objects.filter(callback_url__isnull=False, status="completed").exists():
        _give_callbacks(now)
    if args.analyze and vendor == "sqlite":
        analyze_sqlite()
    print(f"== {Task.objects.count():,} tasks ({vendor})")
    rules = [
        AlertRule(name="rate 10 min", kind=AlertKind.FAILURE_RATE, function_name="fn_00", window_s=600, min_finished=1),
        AlertRule(name="rate 24 h (capped sample)", kind=AlertKind.FAILURE_RATE, function_name="fn_00",
                  window_s=86400, min_finished=1),
        AlertRule(name="backlog async", kind=AlertKind.BACKLOG, pool="async", threshold=100),
        AlertRule(name="oldest waiting async", kind=AlertKind.OLDEST_WAITING, pool="async", threshold=60),
        AlertRule(name="no worker async", kind=AlertKind.NO_WORKER, pool="async"),
    ]
    def no_workers(pool: str) -> int:
        return 0

    def evaluate(rule: AlertRule) -> Any:
        return alert_measure(rule=rule, now=timezone.now(), live_workers=no_workers)

    for rule in rules:
        value = evaluate(rule).value
        measure(f"{rule.name} -> {value if value is None else round(value, 1)}", functools.partial(evaluate, rule),
                show_plans=not args.no_plans)
    measure("callback scan (finished, with a callback)",
            lambda: list(Task.objects.filter(callback_url__isnull=False, status__in=["completed", "failed"])
                         .order_by().values("id")[:200]), show_plans=not args.no_plans)
    started = time.perf_counter()
    queued = callbacks_collect(now=now)
    print(f"callbacks_collect: {queued} callbacks queued in {(time.perf_counter() - started) * 1000:.1f} ms")
    _finish_cost(vendor)


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
    raise SystemExit(main())
