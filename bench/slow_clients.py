"""Slow clients against one `neutrino serve --mode http` process: do /healthz and a sync call still answer?

Starts the real server (one process, fresh SQLite, no NATS), opens N sockets that each send half a
request header and then stop (a "slowloris"), and meanwhile times `GET /healthz` and a sync call
(`POST /api/add`, anonymous) over fresh connections. Prints, for each, how many answered, the worst and
median time, and the same figures without slow sockets for comparison. Run:

    .venv/bin/python bench/slow_clients.py [--slow 500] [--samples 20] [--workers 1]

A request that gets no answer within --timeout-s counts as stalled. It prints figures and never passes
or fails on them (tests/neutrino_site/test_front_door.py asserts the bound with fewer sockets).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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
        env = {**os.environ, "NEUTRINO_DATA_DIR": tmp, "NEUTRINO_TASK_MODULES": "examples.tasks",
               "PYTHONPATH": str(ROOT), "NEUTRINO_NATS_URL": "", "NEUTRINO_ALLOW_ANONYMOUS": "1",
               "NEUTRINO_LOG_LEVEL": "WARNING"}
        cli = [sys.executable, "-m", "neutrino_site.cli"]
        subprocess.run([*cli, "manage", "migrate", "-v0"], env=env, check=True, cwd=ROOT)
        port = free_port()
        server = subprocess.Popen([*cli, "serve", "--mode", "http", "--host", "127.0.0.1", "--port", str(port),
                                   "--ws-port", "0", "--workers", str(args.workers)], env=env, cwd=ROOT)
        try:
            if not wait_for_port("127.0.0.1", port, 30):
                raise SystemExit("the server did not start within 30 s")
            run_probes(port, args, label=f"`neutrino serve`, {args.workers} process(es)")
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
