"""The Python client end to end: what a user of `NeutrinoClient` sees.

Starts what `neutrino dev` starts, each as a real process: nats-server (JetStream, file store), the
HTTP server (`neutrino serve --mode http`, tokens required) and one worker (`neutrino serve --mode
nats --pool async`), on a fresh SQLite database (or PostgreSQL when DATABASE_URL is set: point it at
a scratch database). The client authenticates with a token from `neutrino token create`.

1. `client.call_sync("noop")`, sequential: p50/p99 (every call carries an Idempotency-Key, as the
   client always sends one);
2. `client.call_async("async_noop").wait()`, sequential: p50/p99 of the whole round trip
   (submit, a worker runs it, the long-poll answers);
3. `client.submit_many("async_noop", 10,000 items)` (1,000 per request): the clock stops when the
   ledger shows all of them completed. Prints tasks/s.

    .venv/bin/python bench/client_roundtrip.py [--sync 2000] [--async-calls 500] [--many 10000]

It prints figures and never passes or fails on them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import CLI, completed_count, neutrino_stack  # noqa: E402
from bench.sync_latency import percentile  # noqa: E402
from neutrino import NeutrinoClient  # noqa: E402


def timed(samples: list[float], fn: Callable[[], object]) -> None:
    started = time.perf_counter()
    fn()
    samples.append((time.perf_counter() - started) * 1000)


def report(label: str, samples: list[float]) -> None:
    print(f"{label:<34} n={len(samples):<6} p50={statistics.median(samples):7.3f} ms  "
          f"p99={percentile(samples, 99):7.3f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sync", type=int, default=2000, help="sequential call_sync calls")
    parser.add_argument("--async-calls", type=int, default=500, help="sequential call_async().wait() calls")
    parser.add_argument("--many", type=int, default=10_000, help="tasks for submit_many end to end")
    parser.add_argument("--chunk", type=int, default=1000, help="items per batch request")
    parser.add_argument("--concurrency", type=int, default=4, help="worker concurrency (child processes)")
    parser.add_argument("--http-workers", type=int, default=2)
    args = parser.parse_args()

    with neutrino_stack(http_workers=args.http_workers, concurrency=args.concurrency, anonymous=False) as stack:
        data = stack.data
        token = subprocess.run([*CLI, "token", "create", "bench"], env=stack.env, cwd=ROOT, check=True,
                               capture_output=True, text=True).stdout.strip()
        db = stack.database()
        print(f"client round trips: {args.http_workers} HTTP processes, 1 worker (concurrency "
              f"{args.concurrency}), {db}, {os.cpu_count()} CPUs", flush=True)
        with NeutrinoClient(stack.url, token=token) as client:
            for _ in range(200):  # warm up: connections, children, the first async task
                client.call_sync("noop")
            client.call_async("async_noop").wait(timeout=120)

            samples: list[float] = []
            for _ in range(args.sync):
                timed(samples, lambda: client.call_sync("noop"))
            report("call_sync('noop')", samples)

            samples = []
            for _ in range(args.async_calls):
                timed(samples, lambda: client.call_async("async_noop").wait(timeout=60))
            report("call_async('async_noop').wait()", samples)

            target = completed_count(data) + args.many
            items: list[dict[str, object]] = [{} for _ in range(args.many)]
            started = time.perf_counter()
            client.submit_many("async_noop", items, chunk_size=args.chunk)
            submitted_s = time.perf_counter() - started
            deadline = time.monotonic() + 600
            done = completed_count(data)
            while done < target and time.monotonic() < deadline:
                time.sleep(0.1)
                done = completed_count(data)
            elapsed = time.perf_counter() - started
            print(f"submit_many {args.many} no-op tasks     submitted in {submitted_s:5.2f} s "
                  f"({args.many / submitted_s:6.0f}/s), all completed in {elapsed:5.2f} s: "
                  f"{args.many / elapsed:6.0f} tasks/s"
                  + ("" if done >= target else f"  (only {done - (target - args.many)} completed)"), flush=True)


if __name__ == "__main__":
    main()
