"""Async path: the 202's latency, and end-to-end throughput of no-op async tasks with every task in the ledger.

Starts what `neutrino dev` starts, each as a real process: nats-server (JetStream, file store), the
HTTP server (`neutrino serve --mode http`) and one worker (`neutrino serve --mode nats --pool async`),
on a fresh SQLite database (or PostgreSQL when DATABASE_URL is set: point it at a scratch database).

1. enqueue latency: sequential `POST /api/async_noop` -> 202, p50/p95/p99;
2. end to end: N tasks submitted over HTTP by 8 client threads; the clock stops when the ledger shows
   all N completed. Prints tasks/s.

    .venv/bin/python bench/async_throughput.py [--enqueue 2000] [--tasks 5000] [--concurrency 4]

It prints figures and never passes or fails on them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import completed_count, neutrino_stack  # noqa: E402
from bench.sync_latency import percentile  # noqa: E402

BODY = json.dumps({"args": {}}).encode()
HEADERS = {"Content-Type": "application/json"}


def submit_loop(port: int, count: int, out: list[float]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(count):
        started = time.perf_counter()
        conn.request("POST", "/api/async_noop", body=BODY, headers=HEADERS)
        response = conn.getresponse()
        payload = response.read()
        out.append((time.perf_counter() - started) * 1000)
        if response.status != 202:
            raise RuntimeError(f"submit answered {response.status}: {payload[:200]!r}")
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--enqueue", type=int, default=2000, help="sequential submits for the latency figure")
    parser.add_argument("--tasks", type=int, default=5000, help="tasks for the end-to-end figure")
    parser.add_argument("--concurrency", type=int, default=4, help="worker concurrency (child processes)")
    parser.add_argument("--http-workers", type=int, default=2)
    args = parser.parse_args()

    with neutrino_stack(http_workers=args.http_workers, concurrency=args.concurrency) as stack:
        port, data = stack.port, stack.data
        print(f"async no-op tasks: 1 worker (concurrency {args.concurrency}), {args.http_workers} HTTP "
              f"processes, {stack.database()}, {os.cpu_count()} CPUs", flush=True)
        before = completed_count(data)
        warm: list[float] = []
        submit_loop(port, 200, warm)

        samples: list[float] = []
        submit_loop(port, args.enqueue, samples)
        print(f"enqueue (202)  n={len(samples):<6} p50={statistics.median(samples):6.3f} ms  "
              f"p95={percentile(samples, 95):6.3f} ms  p99={percentile(samples, 99):6.3f} ms", flush=True)

        # Let the warm-up and latency tasks drain first, so no backlog counts toward the end-to-end figure.
        earlier = before + len(warm) + len(samples)
        deadline = time.monotonic() + 120
        while completed_count(data) < earlier and time.monotonic() < deadline:
            time.sleep(0.5)
        target = completed_count(data) + args.tasks
        started = time.perf_counter()
        clients = 8
        threads = [threading.Thread(target=submit_loop, args=(port, args.tasks // clients, []))
                   for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        submitted_s = time.perf_counter() - started
        target = target - args.tasks + (args.tasks // clients) * clients
        deadline = time.monotonic() + 600
        done = completed_count(data)
        while done < target and time.monotonic() < deadline:
            time.sleep(0.2)
            done = completed_count(data)
        elapsed = time.perf_counter() - started
        n = (args.tasks // clients) * clients
        print(f"end to end     n={n:<6} submitted in {submitted_s:5.2f} s ({n / submitted_s:6.0f}/s), "
              f"all completed in {elapsed:5.2f} s: {n / elapsed:6.0f} tasks/s"
              + ("" if done >= target else f"  (only {done - (target - n)} completed)"), flush=True)


if __name__ == "__main__":
    main()
