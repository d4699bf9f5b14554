"""Neutrino against Celery 5 and Dramatiq on the same no-op tasks, end to end, rounds alternating.

Each round runs Neutrino, then Celery, then Dramatiq (`--rounds` times), each on a fresh system:

- Neutrino: nats-server, `neutrino serve --mode http` (2 HTTP processes) and `--workers` (2) worker
  processes of the pool, each `neutrino serve --mode nats --pool async --concurrency 2` (2 child
  processes), SQLite, as bench/stack.py starts them; the task is `bench.bench_tasks.async_noop`. Two
  workers use both cores of a 2-core machine, as Celery's prefork parent and its 2 children do
  (`neutrino dev`'s autoscaler starts up to 4 for a backlog); `--workers 1` shows one process alone.
- Celery: `celery -A bench.celery_app worker --pool prefork --concurrency 2`, Redis broker, no result
  backend (gossip, mingle and heartbeat off: they are for clusters of workers).
- Dramatiq: `dramatiq bench.dramatiq_app -p 2 -t 8` (2 processes x 8 threads), Redis broker.

The peers use a private `redis-server` on a free port (no snapshots, no AOF), emptied before each peer's
turn; `--redis-url` uses one you already run instead (it is FLUSHDB'd: give it a scratch database).

Three figures, each end to end: the clock stops when all N tasks are done.

1. single: N tasks submitted one by one from 8 client threads (Neutrino: `POST /api/async_noop` over
   keep-alive HTTP as bench/async_throughput.py; Celery: `apply_async()`; Dramatiq: `send()`);
2. batch: N tasks submitted from one thread the peer's batch way (Neutrino: `NeutrinoClient.submit_many`,
   1,000 items per `POST /api/async_noop/batch`; Celery: `group()` of 1,000 signatures per
   `apply_async()`; Dramatiq: `send()` in a loop, as its Redis broker has no batch enqueue);
3. drain: N tasks queued with no worker running, then the workers started; the clock runs from the
   workers' start (their start-up included) until all are done.

How "done" is counted, and why that is fair to the peers: Neutrino's figure counts completed rows in its
ledger (every task is a row with its arguments, status, result and times, written as it runs); Celery and
Dramatiq keep nothing once a message is acknowledged, so their task does one Redis INCR and the benchmark
polls that counter. Neutrino does strictly more work per task than the peers here.

    pip install -e '.[dev,bench]'   # or: make bench-peers
    .venv/bin/python bench/vs_celery.py [--tasks 5000] [--rounds 3]

It prints every figure of every round, the medians, and Neutrino / Celery and Neutrino / Dramatiq; it
never passes or fails on them. Debian/Ubuntu: `apt-get install redis-server` for the broker.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.async_throughput import submit_loop  # noqa: E402
from bench.stack import completed_count, neutrino_stack, start_worker  # noqa: E402
from workers.engine.nats_server import free_port, wait_for_port  # noqa: E402
from workers.engine.processes import stop_process  # noqa: E402

FIGURES = ("single", "batch", "drain")
PEERS = ("neutrino", "celery", "dramatiq")
CLIENT_THREADS = 8
BATCH = 1000
POLL_S = 0.05
BATCH_WAYS = {
    "neutrino": f"NeutrinoClient.submit_many, {BATCH} items per POST /api/async_noop/batch",
    "celery": f"group() of {BATCH} signatures per apply_async()",
    "dramatiq": "send() in a loop (its Redis broker has no batch enqueue)",
}

# One run's figures, tasks/s, by name; None where not all tasks were done before the deadline.
Figures = dict[str, float | None]


@dataclass(frozen=True)
class Settings:
    tasks: int
    workers: int
    concurrency: int
    http_workers: int
    timeout_s: float


def shares(total: int, parts: int) -> list[int]:
    """`total` split into `parts` counts that differ by at most one."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def from_threads(send: Callable[[int], None], total: int) -> None:
    """`send(count)` in CLIENT_THREADS threads at once, `total` tasks in all; re-raises a thread's error."""
    errors: list[BaseException] = []

    def run(count: int) -> None:
        try:
            send(count)
        except BaseException as exc:  # reported by the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(count,)) for count in shares(total, CLIENT_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def until_done(count: Callable[[], int], target: int, started: float, timeout_s: float,
               workers: Sequence[subprocess.Popen[bytes]]) -> tuple[float, int]:
    """Poll `count()` until it reaches `target` (or a worker exits); the seconds since `started` and the
    last count."""
    deadline = time.monotonic() + timeout_s
    done = count()
    while done < target and time.monotonic() < deadline and all(worker.poll() is None for worker in workers):
        time.sleep(POLL_S)
        done = count()
    return time.perf_counter() - started, done


def first_done(count: Callable[[], int], started: float, timeout_s: float,
               workers: Sequence[subprocess.Popen[bytes]], *, before: int = 0) -> float:
    """Seconds from `started` until `count()` is above `before`: in the drain figure, the worker's start-up."""
    until_done(count, before + 1, started, timeout_s, workers)
    return time.perf_counter() - started


def figure(peer: str, name: str, n: int, submitted_s: float | None, elapsed: float, done: int, *,
           first_s: float | None = None) -> float | None:
    """Print one figure and return it (None when not all n were done in time)."""
    submit = "" if submitted_s is None else f"submitted in {submitted_s:6.2f} s ({n / submitted_s:6.0f}/s), "
    if first_s is not None:
        submit = f"first done after {first_s:5.2f} s, "
    rate = n / elapsed if done >= n else None
    print(f"  {peer:<9} {name:<6} n={n:<6} {submit}all done in {elapsed:6.2f} s: "
          + (f"{rate:6.0f} tasks/s" if rate is not None else f"only {done} done before the deadline"), flush=True)
    return rate


# --- Neutrino ------------------------------------------------------------------------------------------


def run_neutrino(settings: Settings) -> Figures:
    from neutrino import NeutrinoClient

    n = settings.tasks
    figures: Figures = {}
    items: list[dict[str, object]] = [{} for _ in range(n)]
    with neutrino_stack(http_workers=settings.http_workers, concurrency=settings.concurrency,
                        worker=False) as stack, NeutrinoClient(stack.url) as client:
        data = stack.data

        def done() -> int:
            return completed_count(data)

        before = done()  # a PostgreSQL database keeps the rows of earlier rounds
        client.submit_many("async_noop", items, chunk_size=BATCH)  # queued; no worker runs yet
        started = time.perf_counter()
        workers = [start_worker(stack, concurrency=settings.concurrency) for _ in range(settings.workers)]
        try:
            first_s = first_done(done, started, settings.timeout_s, workers, before=before)
            elapsed, count = until_done(done, before + n, started, settings.timeout_s, workers)
            figures["drain"] = figure("neutrino", "drain", n, None, elapsed, count - before, first_s=first_s)

            before = done()
            started = time.perf_counter()
            from_threads(lambda count: submit_loop(stack.port, count, []), n)
            submitted_s = time.perf_counter() - started
            elapsed, count = until_done(done, before + n, started, settings.timeout_s, workers)
            figures["single"] = figure("neutrino", "single", n, submitted_s, elapsed, count - before)

            before = done()
            started = time.perf_counter()
            client.submit_many("async_noop", items, chunk_size=BATCH)
            submitted_s = time.perf_counter() - started
            elapsed, count = until_done(done, before + n, started, settings.timeout_s, workers)
            figures["batch"] = figure("neutrino", "batch", n, submitted_s, elapsed, count - before)
        finally:
            for worker in workers:
                stop_process(worker, 60)
    return figures


# --- Celery and Dramatiq -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisPeer:
    name: str
    worker: list[str]  # the worker's command line
    counter: str  # the Redis key each run of the task adds one to
    send: Callable[[int], None]  # submit `count` tasks one by one from this thread
    send_batch: Callable[[int], None]  # submit `count` tasks the peer's batch way from this thread


def celery_peer() -> RedisPeer:
    from celery import group

    from bench import celery_app

    def send(count: int) -> None:
        for _ in range(count):
            celery_app.noop.apply_async()

    def send_batch(count: int) -> None:
        for size in shares(count, -(-count // BATCH)):
            group(celery_app.noop.s() for _ in range(size)).apply_async()

    # gossip, mingle and heartbeat are how a cluster's workers learn of each other; one worker needs none.
    worker = [sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker", "--pool", "prefork",
              "--concurrency", "2", "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
              "--without-heartbeat"]
    return RedisPeer(name="celery", worker=worker, counter=celery_app.COUNTER, send=send, send_batch=send_batch)


def dramatiq_peer() -> RedisPeer:
    from bench import dramatiq_app

    def send(count: int) -> None:
        for _ in range(count):
            dramatiq_app.noop.send()

    worker = [sys.executable, "-m", "dramatiq", "bench.dramatiq_app", "-p", "2", "-t", "8"]
    return RedisPeer(name="dramatiq", worker=worker, counter=dramatiq_app.COUNTER, send=send, send_batch=send)


def run_redis_peer(peer: RedisPeer, redis_url: str, settings: Settings) -> Figures:
    import redis

    n = settings.tasks
    figures: Figures = {}
    store = redis.Redis.from_url(redis_url)
    store.flushdb()  # the last turn's counters and any message left behind

    def done() -> int:
        return int(store.get(peer.counter) or 0)

    env = {**os.environ, "BENCH_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    peer.send_batch(n)  # queued; no worker runs yet
    # The worker's banner and log go to a file, shown only if it stops before its tasks are done.
    log = tempfile.NamedTemporaryFile(prefix=f"bench-{peer.name}-", suffix=".log")  # noqa: SIM115
    started = time.perf_counter()
    worker = subprocess.Popen(peer.worker, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        first_s = first_done(done, started, settings.timeout_s, [worker])
        elapsed, count = until_done(done, n, started, settings.timeout_s, [worker])
        figures["drain"] = figure(peer.name, "drain", n, None, elapsed, count, first_s=first_s)

        before = done()
        started = time.perf_counter()
        from_threads(peer.send, n)
        submitted_s = time.perf_counter() - started
        elapsed, count = until_done(done, before + n, started, settings.timeout_s, [worker])
        figures["single"] = figure(peer.name, "single", n, submitted_s, elapsed, count - before)

        before = done()
        started = time.perf_counter()
        peer.send_batch(n)
        submitted_s = time.perf_counter() - started
        elapsed, count = until_done(done, before + n, started, settings.timeout_s, [worker])
        figures["batch"] = figure(peer.name, "batch", n, submitted_s, elapsed, count - before)
    finally:
        if worker.poll() is not None:
            tail = Path(log.name).read_text(errors="replace").splitlines()[-20:]
            print(f"  the {peer.name} worker exited with {worker.returncode}:", *tail, sep="\n    ", flush=True)
        stop_process(worker, 60)
        log.close()
        store.close()
    return figures


@contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of our own on a free port, without persistence; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("bench/vs_celery.py needs redis-server on PATH for the peers' broker "
                         "(Debian/Ubuntu: apt-get install redis-server), or --redis-url of one you run")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="neutrino-bench-redis-") as tmp:
        process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no", "--dir", tmp, "--loglevel", "warning"],
                                   stdout=subprocess.DEVNULL)
        try:
            if not wait_for_port("127.0.0.1", port, 15):
                raise SystemExit(f"redis-server did not listen on port {port} within 15 s")
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop_process(process, 15)


# --- report ----------------------------------------------------------------------------------------------


def median(values: list[float | None]) -> float | None:
    """The median of the rounds, or None if any round did not finish (its figure would flatter)."""
    finished = [value for value in values if value is not None]
    return statistics.median(finished) if finished and len(finished) == len(values) else None


def summary(results: dict[str, list[Figures]]) -> None:
    rounds = len(results["neutrino"])
    print(f"\nmedians of {rounds} round(s), tasks/s (higher is better)", flush=True)
    print(f"  {'figure':<7} " + " ".join(f"{peer:>10}" for peer in PEERS)
          + f" {'N / Celery':>11} {'N / Dramatiq':>13}")
    for name in FIGURES:
        medians = {peer: median([figures.get(name) for figures in results[peer]]) for peer in PEERS}
        cells = " ".join(f"{value:>10.0f}" if value is not None else f"{'-':>10}" for value in medians.values())
        ratios = []
        for peer, width in (("celery", 11), ("dramatiq", 13)):
            ours, theirs = medians["neutrino"], medians[peer]
            ratios.append(f"{ours / theirs:>{width}.2f}" if ours is not None and theirs else f"{'-':>{width}}")
        print(f"  {name:<7} {cells} {' '.join(ratios)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=5000, help="tasks per figure")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of Neutrino, Celery, Dramatiq")
    parser.add_argument("--workers", type=int, default=2,
                        help="Neutrino worker processes of the pool (default 2: one per core here; neutrino dev's "
                             "autoscaler starts up to 4 for a backlog)")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="Neutrino worker's child processes (Celery's prefork -c 2 has two)")
    parser.add_argument("--http-workers", type=int, default=2, help="Neutrino HTTP server processes")
    parser.add_argument("--timeout", type=float, default=600, help="seconds a figure may take before it is given up")
    parser.add_argument("--redis-url", help="use this Redis (it is FLUSHDB'd) instead of a private redis-server")
    args = parser.parse_args()
    settings = Settings(tasks=args.tasks, workers=args.workers, concurrency=args.concurrency,
                        http_workers=args.http_workers, timeout_s=args.timeout)

    broker: AbstractContextManager[str] = private_redis() if args.redis_url is None else nullcontext(args.redis_url)
    with broker as redis_url:
        # The peers' modules read the broker's address when imported, here and in their workers.
        os.environ["BENCH_REDIS_URL"] = redis_url
        peers = [celery_peer(), dramatiq_peer()]
        print(f"no-op tasks, {settings.tasks} per figure, {args.rounds} round(s), {os.cpu_count()} CPUs; "
              f"Neutrino: {settings.workers} worker(s) (concurrency {settings.concurrency} each), "
              f"{settings.http_workers} HTTP processes, "
              f"{'PostgreSQL' if os.environ.get('DATABASE_URL') else 'SQLite'}; Celery: prefork -c 2; "
              f"Dramatiq: -p 2 -t 8; Redis {redis_url}", flush=True)
        print("batch is: " + "; ".join(f"{peer}: {way}" for peer, way in BATCH_WAYS.items()), flush=True)
        results: dict[str, list[Figures]] = {peer: [] for peer in PEERS}
        for number in range(1, args.rounds + 1):
            print(f"round {number}", flush=True)
            results["neutrino"].append(run_neutrino(settings))
            for peer in peers:
                results[peer.name].append(run_redis_peer(peer, redis_url, settings))
        summary(results)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a SIGTERM stops the workers as Ctrl-C does
    main()
