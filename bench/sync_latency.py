"""Sync-call latency through the real HTTP server, with the ledger on and off.

Starts `neutrino serve --mode http` (gunicorn, as in production) on a free port with a
fresh SQLite database, calls the no-op sync task sequentially and at concurrency 16
over keep-alive connections, and prints p50/p95/p99 latency and requests/s. Run:

    .venv/bin/python bench/sync_latency.py [--requests 3000] [--workers 2]

The third figure is the same call through a gateway that forwards it to a fast-pool server
(NEUTRINO_SYNC_UPSTREAM, as in Kubernetes): its difference from "ledger on" is the cost of the hop.
It prints figures and never passes or fails on them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import serve_env  # noqa: E402
from workers.engine.nats_server import free_port, wait_for_port  # noqa: E402

BODY = json.dumps({"args": {}}).encode()
HEADERS = {"Content-Type": "application/json"}


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def call_loop(port: int, count: int, path: str, out: list[float]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(count):
        started = time.perf_counter()
        conn.request("POST", path, body=BODY, headers=HEADERS)
        response = conn.getresponse()
        payload = response.read()
        out.append((time.perf_counter() - started) * 1000)
        if response.status != 200:
            raise RuntimeError(f"{path} answered {response.status}: {payload[:200]!r}")
    conn.close()


def run_load(port: int, total: int, concurrency: int, path: str) -> tuple[list[float], float]:
    per_thread = max(1, total // concurrency)
    results: list[list[float]] = [[] for _ in range(concurrency)]
    threads = [threading.Thread(target=call_loop, args=(port, per_thread, path, results[i]))
               for i in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    samples = [s for r in results for s in r]
    return samples, len(samples) / elapsed


def start_server(*, ledger: bool, workers: int, data_dir: Path, upstream: str = "",
                 migrate: bool = True) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        **serve_env(),
        "NEUTRINO_DATA_DIR": str(data_dir),
        "NEUTRINO_LEDGER": "1" if ledger else "0",
        "NEUTRINO_TASK_MODULES": "bench.bench_tasks",
        "PYTHONPATH": str(ROOT),
        "NEUTRINO_NATS_URL": "",
        "NEUTRINO_ALLOW_ANONYMOUS": "1",
        "NEUTRINO_SYNC_UPSTREAM": upstream,
    }
    if migrate:
        subprocess.run([sys.executable, "-m", "neutrino_site.cli", "manage", "migrate", "-v0"], env=env, check=True,
                       cwd=ROOT)
    process = subprocess.Popen(
        [sys.executable, "-m", "neutrino_site.cli", "serve", "--mode", "http", "--host", "127.0.0.1",
         "--port", str(port), "--ws-port", "0", "--workers", str(workers)],
        env=env, cwd=ROOT,
    )
    if not wait_for_port("127.0.0.1", port, 30):
        process.kill()
        raise SystemExit("the server did not start within 30 s")
    return process, port


def report(label: str, port: int, requests: int) -> None:
    run_load(port, 300, 4, "/api/noop")  # warm every process and child
    for concurrency in (1, 16):
        samples, rate = run_load(port, requests, concurrency, "/api/noop")
        print(
            f"{label:<11} c={concurrency:<3} n={len(samples):<6} "
            f"p50={statistics.median(samples):6.3f} ms  p95={percentile(samples, 95):6.3f} ms  "
            f"p99={percentile(samples, 99):6.3f} ms  {rate:8.0f} req/s",
            flush=True,
        )


def measure(label: str, *, ledger: bool, workers: int, requests: int) -> None:
    with tempfile.TemporaryDirectory(prefix="neutrino-bench-") as tmp:
        process, port = start_server(ledger=ledger, workers=workers, data_dir=Path(tmp))
        try:
            report(label, port, requests)
        finally:
            process.terminate()
            process.wait(30)


def measure_via_gateway(*, workers: int, requests: int) -> None:
    """The same calls through a gateway that forwards them to a fast-pool server (NEUTRINO_SYNC_UPSTREAM)."""
    with tempfile.TemporaryDirectory(prefix="neutrino-bench-") as tmp:
        fast, fast_port = start_server(ledger=True, workers=workers, data_dir=Path(tmp))
        gateway, gateway_port = start_server(ledger=True, workers=workers, data_dir=Path(tmp), migrate=False,
                                             upstream=f"http://127.0.0.1:{fast_port}")
        try:
            report("via gateway", gateway_port, requests)
        finally:
            for process in (gateway, fast):
                process.terminate()
                process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="gunicorn processes")
    args = parser.parse_args()
    print(f"no-op sync task through `neutrino serve` (gunicorn gthread, {args.workers} workers), "
          f"{os.cpu_count()} CPUs", flush=True)
    measure("ledger on", ledger=True, workers=args.workers, requests=args.requests)
    measure("ledger off", ledger=False, workers=args.workers, requests=args.requests)
    measure_via_gateway(workers=args.workers, requests=args.requests)


if __name__ == "__main__":
    main()
