"""What limits cost a task: the worker's claim of a limited task against an unlimited one, and the claim a
task waiting for its key makes each time it is offered again (refused, rolled back).

    python bench/limits.py                      # a fresh SQLite file
    DATABASE_URL=postgres://postgres@127.0.0.1/test python bench/limits.py
    python bench/limits.py --end-to-end 4000    # tasks/s through a real stack (bench/stack.py)

Each round claims ROWS queued rows with the service the workers call (`task_mark_running`, or
`task_mark_running_limited` with a concurrency limit, a rate, or both); every claimed row is completed
at once, untimed, so a key holds one running row as on a busy worker. Rounds of the variants alternate;
the figures are medians of the rounds, per claim, in this one process. It prints figures; it never
passes or fails on time.

`--end-to-end N` starts nats-server, an HTTP server and one worker (concurrency 4) and times N tasks
submitted in batches until all are completed: `async_noop` (no limits), `async_limited_noop` (4 per key,
over 8 keys: limits checked, never full) and `async_tight_noop` (one key, 2 at once: half the worker's
slots, the others wait and are offered again).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 5
ROWS = 1_000


class _NoEvents:
    def emit(self, task_id: str, status: str, **extra: Any) -> None:
        pass

    def emit_many(self, task_ids: Any, status: str) -> None:
        pass


def _setup() -> str:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "neutrino_site.settings")
    os.environ.setdefault("NEUTRINO_TASK_MODULES", "examples.tasks")
    if not os.environ.get("DATABASE_URL"):
        path = Path(tempfile.mkdtemp(prefix="neutrino-bench-")) / "limits.db"
        os.environ["NEUTRINO_SQLITE_PATH"] = str(path)
        os.environ.setdefault("NEUTRINO_DATA_DIR", str(path.parent))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    import sqlite3

    return f"SQLite {sqlite3.sqlite_version}" if connection.vendor == "sqlite" else connection.vendor


def _queued(function: str, n: int, key: str) -> list[str]:
    from django.utils import timezone

    from tasks_app.models import Task

    rows = [Task(id=uuid.uuid4(), function_name=function, status="queued", pool="bench", execution_mode="async",
                 created_at=timezone.now(), timeout_ms=1000, args={"customer": key}) for _ in range(n)]
    Task.objects.bulk_create(rows)
    return [str(row.id) for row in rows]


def _claims(variant: str, limits: Any, ids: list[str]) -> tuple[float, int]:
    """µs per claim of `ids`, and how many were claimed."""
    from tasks_app.services.limits import task_mark_running_limited
    from tasks_app.services.tasks import task_mark_completed, task_mark_running

    events: Any = _NoEvents()
    spent = 0.0
    claimed = 0
    for task_id in ids:
        started = time.perf_counter()
        if limits is None:
            outcome: Any = task_mark_running(events=events, task_id=task_id, pool="bench", attempt=1,
                                             worker_id="bench:1")
        else:
            outcome = task_mark_running_limited(events=events, task_id=task_id, pool="bench", attempt=1,
                                                worker_id="bench:1", limits=limits)
        spent += time.perf_counter() - started
        if outcome is not None and not hasattr(outcome, "retry_in_s"):
            claimed += 1
            task_mark_completed(events=events, task_id=task_id, attempt=1, result=None, duration_ms=1.0,
                                worker_id="bench:1")
    return spent / len(ids) * 1e6, claimed


def _end_to_end(tasks: int) -> None:
    import http.client
    import json

    sys.path.insert(0, str(ROOT))
    from bench.stack import completed_count, neutrino_stack

    variants = [("async_noop", lambda n: {}), ("async_limited_noop", lambda n: {"customer": f"c{n % 8}"}),
                ("async_tight_noop", lambda n: {"customer": "one"})]
    with neutrino_stack(http_workers=2, concurrency=4) as stack:
        print(f"end to end: 1 worker (concurrency 4), {stack.database()}, {os.cpu_count()} CPUs, {tasks} tasks each")
        for function, args_of in variants:
            started = time.perf_counter()
            for first in range(0, tasks, 500):
                items = [{"args": args_of(n)} for n in range(first, min(first + 500, tasks))]
                conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=60)
                conn.request("POST", f"/api/{function}/batch", body=json.dumps({"items": items}),
                             headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                assert response.status == 202, response.status
            deadline = time.monotonic() + 600
            while completed_count(stack.data, function) < tasks and time.monotonic() < deadline:
                time.sleep(0.2)
            elapsed = time.perf_counter() - started
            done = completed_count(stack.data, function)
            print(f"  {function:<20} {done} completed in {elapsed:6.2f} s: {done / elapsed:6.0f} tasks/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--end-to-end", type=int, default=0, metavar="N", help="N tasks through a real stack")
    options = parser.parse_args()
    if options.end_to_end:
        _end_to_end(options.end_to_end)
        return
    database = _setup()
    from neutrino.limits import Limits, Rate
    from tasks_app.services.limits import task_mark_running_limited

    variants: dict[str, Any] = {
        "no limits": None,
        "max_concurrency per key": Limits(concurrency_key="customer", max_concurrency=4),
        "rate_limit (never full)": Limits(rate=Rate(count=10**9, period_s=1.0)),
        "both, per key": Limits(concurrency_key="customer", max_concurrency=4,
                                rate=Rate(count=10**9, period_s=1.0), rate_per_key=True),
        "refused: its key is full": Limits(concurrency_key="customer", max_concurrency=1),
    }
    # The refused variant's key holds one running task for the whole run.
    holder = _queued("bench_refused", 1, "busy")[0]
    task_mark_running_limited(events=_NoEvents(), task_id=holder, pool="bench", attempt=1,  # type: ignore[arg-type]
                              worker_id="bench:1", limits=variants["refused: its key is full"])
    figures: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(ROUNDS):
        for index, (name, limits) in enumerate(variants.items()):
            refused = name.startswith("refused")
            ids = _queued("bench_refused" if refused else f"bench_{index}", ROWS, "busy" if refused else "c1")
            per_claim, claimed = _claims(name, limits, ids)
            assert claimed == (0 if refused else ROWS), (name, claimed)
            figures[name].append(per_claim)
    base = statistics.median(figures["no limits"])
    print(f"claims on {database}, {ROUNDS} rounds of {ROWS} per variant (medians, one process):")
    for name, values in figures.items():
        median = statistics.median(values)
        print(f"  {name:<26} {median:7.1f} µs/claim  ({median - base:+7.1f} µs)  "
              f"rounds: {', '.join(f'{v:.0f}' for v in values)}")


if __name__ == "__main__":
    main()
