"""What task logs cost: a sync task printing 10,000 lines against one printing none, through the real HTTP
server, with log capture on (the default) and off (NEUTRINO_LOG_MAX_BYTES=0, output to /dev/null as a
server's console would take it); then what storing those lines costs the database, as one row per line
against the chunks Neutrino writes. Run:

    .venv/bin/python bench/task_logs.py [--calls 30] [--lines 10000]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/task_logs.py   # a scratch database

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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import serve_env  # noqa: E402
from workers.engine.nats_server import free_port, wait_for_port  # noqa: E402

HEADERS = {"Content-Type": "application/json"}


def server_env(data_dir: Path, log_max_bytes: int) -> dict[str, str]:
    return {**os.environ, **serve_env(), "NEUTRINO_DATA_DIR": str(data_dir),
            "NEUTRINO_TASK_MODULES": "bench.bench_tasks", "PYTHONPATH": str(ROOT), "NEUTRINO_NATS_URL": "",
            "NEUTRINO_ALLOW_ANONYMOUS": "1", "NEUTRINO_LOG_MAX_BYTES": str(log_max_bytes),
            "NEUTRINO_SYNC_PROCESSES": "1"}


def timed_calls(port: int, args: dict[str, int], calls: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = json.dumps({"args": args}).encode()
    samples = []
    for _ in range(calls + 3):  # the first three warm the child
        started = time.perf_counter()
        conn.request("POST", "/api/print_lines", body=body, headers=HEADERS)
        response = conn.getresponse()
        payload = response.read()
        samples.append((time.perf_counter() - started) * 1000)
        if response.status != 200:
            raise RuntimeError(f"answered {response.status}: {payload[:200]!r}")
    conn.close()
    return samples[3:]


def measure_http(*, log_max_bytes: int, lines: int, calls: int) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory(prefix="neutrino-bench-") as tmp:
        env = server_env(Path(tmp), log_max_bytes)
        subprocess.run([sys.executable, "-m", "neutrino_site.cli", "manage", "migrate", "-v0"], env=env, check=True,
                       cwd=ROOT)
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "neutrino_site.cli", "serve", "--mode", "http", "--host", "127.0.0.1",
             "--port", str(port), "--ws-port", "0", "--workers", "1"],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if not wait_for_port("127.0.0.1", port, 30):
                raise SystemExit("the server did not start within 30 s")
            # Interleaved, so a change of load on the machine touches both alike.
            quiet: list[float] = []
            loud: list[float] = []
            for _ in range(calls):
                quiet += timed_calls(port, {"count": 0}, 1)
                loud += timed_calls(port, {"count": lines}, 1)
            return quiet, loud
        finally:
            process.terminate()
            process.wait(30)


def measure_storage(*, lines: int, rounds: int) -> None:
    """Rows per line (a TaskLog table of (task, attempt, seq, ts, level, stream, text)) against Neutrino's chunks."""
    with tempfile.TemporaryDirectory(prefix="neutrino-bench-") as tmp:
        os.environ.update(server_env(Path(tmp), 1_000_000))
        os.environ["DJANGO_SETTINGS_MODULE"] = "neutrino_site.settings"
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection, transaction
        from django.utils import timezone

        from tasks_app.models import Task, TaskLogChunk
        from workers.engine.logs.format import encode_record

        call_command("migrate", verbosity=0)
        now = time.time()
        records = [encode_record(now, "INFO", "stdout", f"{i} {'x' * 60}") for i in range(lines)]
        data = b"".join(records)
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE bench_log_line (task_id varchar(36), attempt integer, seq integer, "
                           "ts double precision, level varchar(16), stream varchar(16), text text)")
        per_line, per_chunk = [], []
        for _ in range(rounds):
            task = Task.objects.create(function_name="print_lines", status="completed", pool="fast",
                                       execution_mode="sync", created_at=timezone.now(), timeout_ms=1000)
            rows = [(str(task.id), 1, i, now, "INFO", "stdout", f"{i} {'x' * 60}") for i in range(lines)]
            started = time.perf_counter()
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.executemany("INSERT INTO bench_log_line VALUES (%s, %s, %s, %s, %s, %s, %s)", rows)
            per_line.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            pieces = [data[i:i + 256_000] for i in range(0, len(data), 256_000)]
            with transaction.atomic():
                TaskLogChunk.objects.bulk_create([
                    TaskLogChunk.from_read(task_id=str(task.id), attempt=1, seq=n + 1, data=piece, dropped_bytes=0,
                                           written_at=timezone.now()) for n, piece in enumerate(pieces)])
            per_chunk.append((time.perf_counter() - started) * 1000)
        database = "PostgreSQL" if os.environ.get("DATABASE_URL") else "SQLite"
        print(f"storing {lines:,} lines ({len(data) / 1e6:.2f} MB) on {database}, median of {rounds}: "
              f"a row per line {statistics.median(per_line):.1f} ms, "
              f"chunks of 256 kB {statistics.median(per_chunk):.1f} ms", flush=True)
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE bench_log_line")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--lines", type=int, default=10_000)
    args = parser.parse_args()
    print(f"sync task through `neutrino serve` (1 worker, 1 child), {os.cpu_count()} CPUs, "
          f"{args.calls} calls each, load average {os.getloadavg()[0]:.1f}", flush=True)
    for label, cap in (("capture on ", 1_000_000), ("capture off", 0)):
        quiet, loud = measure_http(log_max_bytes=cap, lines=args.lines, calls=args.calls)
        # The minimum as well as the median: on a shared machine it is the figure other load disturbs least.
        for name, pick in (("median", statistics.median), ("min", min)):
            print(f"{label} {name:<6}: no output {pick(quiet):7.2f} ms   {args.lines:,} lines {pick(loud):7.2f} ms   "
                  f"difference {pick(loud) - pick(quiet):6.1f} ms", flush=True)
    measure_storage(lines=args.lines, rounds=5)


if __name__ == "__main__":
    main()
