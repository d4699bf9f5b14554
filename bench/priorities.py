"""Priorities: 10,000 low-priority tasks queued, then 100 high ones; when do the high ones start? And what
the levels cost: the drain rate of a backlog of normal tasks (today's path) against one of low tasks
(fetched level by level).

Starts nats-server, the HTTP server and one worker of the async pool as real processes (bench/stack.py), on
a fresh SQLite database (or PostgreSQL when DATABASE_URL names a scratch database).

1. drain: `--drain` normal no-op tasks queued with no worker, then a worker started: tasks/s until all
   completed; the same with `--drain` low tasks.
2. overtaking: `--low` low tasks queued, the worker started, and once `--head-start` of them have
   completed, `--high` high tasks queued in one batch. Prints how many low tasks started after the high
   batch was queued but before the last high task started, and how long the high ones took to start.

    .venv/bin/python bench/priorities.py [--low 10000] [--high 100] [--drain 5000] [--concurrency 4]

It prints figures and never passes or fails on them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import Stack, completed_count, neutrino_stack, query, start_worker  # noqa: E402
from workers.engine.processes import stop_process  # noqa: E402

BATCH = 1000


def queue(port: int, count: int, priority: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for start in range(0, count, BATCH):
        size = min(BATCH, count - start)
        body = json.dumps({"priority": priority, "items": [{"args": {}}] * size}).encode()
        conn.request("POST", "/api/async_noop/batch", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
        if response.status != 202:
            raise RuntimeError(f"batch answered {response.status}: {payload[:200]!r}")
    conn.close()


def wait_completed(data: Path, target: int, timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while completed_count(data) < target and time.monotonic() < deadline:
        time.sleep(0.2)


def drain(stack: Stack, count: int, priority: str, concurrency: int) -> float:
    """Queue `count` tasks with no worker, start one and time it until all are completed: tasks/s."""
    target = completed_count(stack.data) + count
    queue(stack.port, count, priority)
    started = time.perf_counter()
    worker = start_worker(stack, concurrency=concurrency)
    try:
        wait_completed(stack.data, target)
        return count / (time.perf_counter() - started)
    finally:
        worker.send_signal(signal.SIGTERM)
        stop_process(worker, 60, terminate=False)


def when(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--low", type=int, default=10_000)
    parser.add_argument("--high", type=int, default=100)
    parser.add_argument("--head-start", type=int, default=500, help="low tasks completed before the high batch")
    parser.add_argument("--drain", type=int, default=5000, help="tasks per drain figure (0: skip)")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    with neutrino_stack(http_workers=2, concurrency=args.concurrency, worker=False) as stack:
        print(f"1 worker (concurrency {args.concurrency}), {stack.database()}, {os.cpu_count()} CPUs", flush=True)
        if args.drain:
            for priority in ("normal", "low"):
                rate = drain(stack, args.drain, priority, args.concurrency)
                print(f"drain {args.drain} {priority:<6} tasks: {rate:6.0f} tasks/s", flush=True)

        base = completed_count(stack.data)
        queue(stack.port, args.low, "low")
        worker = start_worker(stack, concurrency=args.concurrency)
        try:
            wait_completed(stack.data, base + args.head_start)
            queued_at = time.perf_counter()
            queue(stack.port, args.high, "high")
            queued_s = time.perf_counter() - queued_at
            # The rows' own clock from here: the high batch's creation.
            (first_high,) = query(stack.data, "SELECT MIN(created_at) FROM tasks_app_task WHERE priority = 'high'")[0]
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                (left,) = query(stack.data, "SELECT COUNT(*) FROM tasks_app_task WHERE priority = 'high' "
                                            "AND started_at IS NULL")[0]
                if left == 0:
                    break
                time.sleep(0.1)
            (last_high,) = query(stack.data, "SELECT MAX(started_at) FROM tasks_app_task WHERE priority = 'high'")[0]
            (overtaking,) = query(stack.data, "SELECT COUNT(*) FROM tasks_app_task WHERE priority = 'low' "
                                              "AND started_at >= %s AND started_at <= %s",
                                  (first_high, last_high))[0]
            (waiting,) = query(stack.data, "SELECT COUNT(*) FROM tasks_app_task WHERE priority = 'low' "
                                           "AND (started_at IS NULL OR started_at > %s)", (last_high,))[0]
            span_ms = (when(last_high) - when(first_high)).total_seconds() * 1000
            print(f"{args.high} high tasks queued behind {args.low} low ones (batch answered in "
                  f"{queued_s * 1000:.0f} ms): all started {span_ms:.0f} ms after the first was created; "
                  f"{overtaking} low tasks started in that time; {waiting} low tasks still waited", flush=True)
            wait_completed(stack.data, base + args.low + args.high)
        finally:
            worker.send_signal(signal.SIGTERM)
            stop_process(worker, 60, terminate=False)


if __name__ == "__main__":
    main()
