"""Slow clients against one `neutrino serve --mode http` process: do /healthz and a sync call still answer?

Starts the real server (one process, fresh SQLite, no NATS), opens N sockets that each send half a
request header and then stop (a "slowloris"), and meanwhile times `GET /healthz` and a sync call
(`POST /api/add`, anonymous) over fresh connections. Prints, for each, how many answered, the worst and
median time, and the same figures without slow sockets for comparison. Run:

    .venv/bin/python bench/slow_clients.py [--slow 500] [--long-polls 1000] [--samples 20] [--workers 1]

With --long-polls N it then opens N connections that each long-poll (`GET /tasks/<id>?wait=60`) a task
that never finishes, and times the same calls again.

A request that gets no answer within --timeout-s counts as stalled. It prints figures and never passes
or fails on them (tests/neutrino_site/test_front_door.py asserts the bound with fewer sockets).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import selectors
import socket
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

HALF_HEADER = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow"


def open_slow_sockets(port: int, count: int) -> list[socket.socket]:
    """`count` connections that each sent half a request header and will send nothing more."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(HALF_HEADER)
        sockets.append(sock)
    return sockets


CREATE_TASK = """
import uuid
from django.utils import timezone
from tasks_app.models import ANONYMOUS, Task
print(Task.objects.create(id=uuid.uuid4(), function_name="add", status="queued", pool="async",
                          execution_mode="async", created_at=timezone.now(), timeout_ms=60000,
                          created_by=ANONYMOUS).id)
"""


def open_long_polls(port: int, count: int, task_id: str) -> list[socket.socket]:
    """`count` connections that each wait 60 s on a task that never finishes (4 callers: 127.0.0.1-4)."""
    sockets = []
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(f"127.0.0.{1 + i % 4}", 0))
        sock.sendall(f"GET /tasks/{task_id}?wait=60 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        sockets.append(sock)
    return sockets


def answered_at_once(sockets: list[socket.socket], *, quiet_s: float) -> int:
    """How many of `sockets` got an answer, counted until none comes for `quiet_s`."""
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        answered = 0
        while events := selector.select(quiet_s):
            for key, _ in events:
                selector.unregister(key.fileobj)
                answered += 1
    return answered


def timed(port: int, method: str, path: str, body: bytes | None, timeout_s: float) -> float | None:
    """Milliseconds to a complete 200 answer on a fresh connection, or None when it stalled or failed."""
    started = time.perf_counter()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        conn.close()
    except OSError:
        return None
    return (time.perf_counter() - started) * 1000 if response.status == 200 else None


def probe(port: int, samples: int, timeout_s: float) -> dict[str, list[float | None]]:
    add = json.dumps({"args": {"a": 1, "b": 2}}).encode()
    out: dict[str, list[float | None]] = {"/healthz": [], "/api/add": []}
    for _ in range(samples):
        out["/healthz"].append(timed(port, "GET", "/healthz", None, timeout_s))
        out["/api/add"].append(timed(port, "POST", "/api/add", add, timeout_s))
    return out


def show(label: str, figures: dict[str, list[float | None]]) -> None:
    for path, values in figures.items():
        answered = [v for v in values if v is not None]
        worst = f"{max(answered):8.1f}" if answered else "       -"
        median = f"{statistics.median(answered):7.2f}" if answered else "      -"
        print(f"{label:<22} {path:<9} answered {len(answered):>3}/{len(values):<3} "
              f"p50 {median} ms  max {worst} ms", flush=True)


def run_probes(port: int, args: argparse.Namespace, *, label: str) -> None:
    probe(port, 5, 30.0)  # warm the process and its sync children
    print(f"{label}, {os.cpu_count()} CPUs", flush=True)
    show("no slow sockets", probe(port, args.samples, args.timeout_s))
    slow = open_slow_sockets(port, args.slow)
    time.sleep(0.5)
    show(f"{args.slow} slow sockets", probe(port, args.samples, args.timeout_s))
    for sock in slow:
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slow", type=int, default=500, help="slow sockets to open")
    parser.add_argument("--samples", type=int, default=20, help="timed calls of each kind")
    parser.add_argument("--long-polls", type=int, default=0, help="long-polls to open afterwards")
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument("--timeout-s", type=float, default=5.0, help="a call slower than this stalled")
    parser.add_argument("--port", type=int, default=0,
                        help="probe a server already running on this port (another candidate) instead")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.slow * 2 + 256)), hard))

    if args.port:
        run_probes(args.port, args, label=f"the server on port {args.port}")
        return
    with tempfile.TemporaryDirectory(prefix="neutrino-bench-") as tmp:
        env = {**os.environ, **serve_env(), "NEUTRINO_DATA_DIR": tmp, "NEUTRINO_TASK_MODULES": "examples.tasks",
               "PYTHONPATH": str(ROOT), "NEUTRINO_NATS_URL": "", "NEUTRINO_ALLOW_ANONYMOUS": "1",
               "NEUTRINO_LOG_LEVEL": "WARNING"}
        cli = [sys.executable, "-m", "neutrino_site.cli"]
        subprocess.run([*cli, "manage", "migrate", "-v0"], env=env, check=True, cwd=ROOT)
        task_id = subprocess.run([*cli, "manage", "shell", "-c", CREATE_TASK], env=env, check=True, cwd=ROOT,
                                 capture_output=True, text=True).stdout.split()[-1]
        port = free_port()
        server = subprocess.Popen([*cli, "serve", "--mode", "http", "--host", "127.0.0.1", "--port", str(port),
                                   "--ws-port", "0", "--workers", str(args.workers)], env=env, cwd=ROOT)
        try:
            if not wait_for_port("127.0.0.1", port, 30):
                raise SystemExit("the server did not start within 30 s")
            run_probes(port, args, label=f"`neutrino serve`, {args.workers} process(es)")
            if args.long_polls:
                polls = open_long_polls(port, args.long_polls, task_id)
                answered = answered_at_once(polls, quiet_s=1.0)
                print(f"{args.long_polls} long-polls: {answered} answered at once (wait not granted), "
                      f"{args.long_polls - answered} waiting", flush=True)
                show(f"{args.long_polls} long-polls", probe(port, args.samples, args.timeout_s))
                for sock in polls:
                    sock.close()
        finally:
            server.terminate()
            try:
                server.wait(90)  # granted long-polls may hold a graceful stop for their wait
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    main()
