"""Fan-out and fan-in at 10,000 tasks: what a group costs against the same tasks queued as a plain batch.

Starts the stack of `bench/stack.py` (nats-server, the HTTP server, one async worker; SQLite, or PostgreSQL
when DATABASE_URL names a scratch database), then:

1. baseline: N `async_square` tasks through `POST /api/async_square/batch` (1,000 a request); the clock
   stops when the database shows all N completed;
2. group: the same N items in one `POST /api/async_square/group` with `then: async_total`; it prints the
   submit's time, the time until all members completed, the fan-in (from the last member's completed_at
   to the callback's completed_at, read from the rows) and how many callback rows exist (must be 1);
3. the cost per task of being in a group: (group end to end - baseline end to end) / N.

    .venv/bin/python bench/groups.py [--tasks 10000] [--concurrency 4]

It prints figures and never passes or fails on them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import completed_count, neutrino_stack, query  # noqa: E402

HEADERS = {"Content-Type": "application/json"}


def post(port: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("POST", path, body=json.dumps(body).encode(), headers=HEADERS)
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    if response.status != 202:
        raise RuntimeError(f"POST {path} answered {response.status}: {payload[:300]!r}")
    return dict(json.loads(payload))


def wait_completed(data: Path, function: str, count: int, timeout_s: float = 1800) -> float:
    started = time.perf_counter()
    while completed_count(data, function) < count:
        if time.perf_counter() - started > timeout_s:
            raise SystemExit(f"{function}: not {count} completed within {timeout_s:.0f} s")
        time.sleep(0.05)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    n = args.tasks
    items = [{"args": {"x": x}} for x in range(n)]

    with neutrino_stack(http_workers=2, concurrency=args.concurrency) as stack:
        port, data = stack.port, stack.data
        print(f"{n} tasks, worker concurrency {args.concurrency}, {stack.database()}")

        started = time.perf_counter()
        for start in range(0, n, 1000):
            post(port, "/api/async_square/batch", {"items": items[start:start + 1000]})
        batch_submit_s = time.perf_counter() - started
        wait_completed(data, "async_square", n)
        batch_s = time.perf_counter() - started
        print(f"baseline batch: submit {batch_submit_s:.2f} s, end to end {batch_s:.2f} s ({n / batch_s:.0f} tasks/s)")

        started = time.perf_counter()
        group = post(port, "/api/async_square/group", {"items": items, "then": "async_total"})
        group_submit_s = time.perf_counter() - started
        members_s = wait_completed(data, "async_square", 2 * n) + group_submit_s
        wait_completed(data, "async_total", 1)
        group_s = time.perf_counter() - started
        last_member = query(data, "SELECT MAX(completed_at) FROM tasks_app_task WHERE group_id = %s",
                            (group["group_id"].replace("-", "") if not os.environ.get("DATABASE_URL")
                             else group["group_id"],))[0][0]
        callback = query(data, "SELECT completed_at, result FROM tasks_app_task WHERE function_name = %s",
                         ("async_total",))
        callbacks = len(callback)
        fan_in_ms = _ms_between(last_member, callback[0][0])
        expected = sum(x * x for x in range(n))
        print(f"group: submit {group_submit_s:.2f} s ({group_submit_s / n * 1e6:.0f} us/task), members done "
              f"{members_s:.2f} s, callback done {group_s:.2f} s ({n / group_s:.0f} tasks/s)")
        print(f"fan-in: last member completed -> callback completed {fan_in_ms:.0f} ms; callback rows: {callbacks}; "
              f"result {'correct' if json.loads(str(callback[0][1])) == expected else 'WRONG'}")
        print(f"cost of the group: {(group_s - batch_s) / n * 1e3:+.3f} ms per task against the plain batch")


def _ms_between(first: Any, second: Any) -> float:
    from datetime import datetime

    def parse(value: Any) -> datetime:
        return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))

    return (parse(second) - parse(first)).total_seconds() * 1000


if __name__ == "__main__":
    main()
