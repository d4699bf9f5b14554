"""The worker of one NATS pool: `neutrino serve --mode nats --pool P [--concurrency N]`.

One asyncio loop (uvloop when installed) in a Django process:

    fetch (as many messages as there are free slots; twice that while tasks are short)
      -> task_mark_running (conditional UPDATE; False: finished, cancelled or claimed by a newer attempt)
      -> Executor.run in a thread, with msg.in_progress() every ack_wait/3 and throttled progress rows
      -> task_mark_completed, then ack              (at-least-once: ack only after the row is written)
         or task_mark_retrying, then nak(backoff)   (attempt <= max_retries)
         or task_mark_failed, then term             (final failure, or deliveries exhausted)

Beside the fetch loop: a core-NATS subscription to cancel requests (kill the child if this worker runs
the task), one to JetStream's max-deliveries advisories (a task whose worker died on its last delivery is
failed and its message deleted), heartbeats into `pools_app.Worker`, and the sweeper that republishes
`pending` rows the broker never confirmed.

SIGTERM / SIGINT: stop fetching, give running tasks `NEUTRINO_WORKER_GRACE_S` to finish, then kill the
rest, hand them back to the stream (`task_mark_requeued` + nak) so another worker runs them, and exit 0.
A second signal skips the grace period.

All ORM calls run in threads (`asyncio.to_thread`); the loop's default thread pool has room for every
running task plus the database calls, so neither starves the other. The task rows are written only
through `tasks_app.services.tasks`.

The parts, one module each: `fetch` (the fetch loop), `settle` (one message from claim to ack / nak /
term), `control` (cancel requests and max-deliveries advisories), `heartbeat`, `sweeper`, `connection`
(NATS), `db` (database calls from threads, batched transitions) and `state` (what the parts share).
This module holds `run_worker` and `PoolWorker`, which builds the parts, starts them and stops them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import DatabaseError
from django.utils import timezone
from nats.js import JetStreamContext

from neutrino.app import TaskDefinitionError, TaskSpec
from pools_app.models import Pool, PoolKind, PoolMode
from pools_app.selectors import nats_pool_names
from tasks_app.adapters.ledger import LedgerWriter
from tasks_app.core.conf import NeutrinoSettings, neutrino_settings
from tasks_app.core.registry import registered_tasks
from workers.engine import executor as ex
from workers.engine import tracing
from workers.engine.broker.bridge import NatsBridge
from workers.engine.broker.connect import shown
from workers.engine.spool import SPOOL_DIR_PREFIX
from workers.engine.topology import consumer_name
from workers.pool_worker.connection import NatsConnection
from workers.pool_worker.control import Control
from workers.pool_worker.db import TransitionBatcher, db
from workers.pool_worker.fetch import Fetcher
from workers.pool_worker.heartbeat import Heartbeat, detect_gpus
from workers.pool_worker.ports import worker_ports
from workers.pool_worker.priority import PriorityLevels
from workers.pool_worker.settle import Settler
from workers.pool_worker.state import RunningTasks, Slots, StopFlags
from workers.pool_worker.sweeper import sweep_loop

logger = logging.getLogger("neutrino.worker")


def run_worker(*, pool: str, concurrency: int | None) -> int:
    """Serve one NATS pool until SIGTERM/SIGINT. Returns the process exit code (0: clean stop, 2: bad setup)."""
    conf = neutrino_settings()
    try:
        row = Pool.objects.filter(name=pool).first()
    except DatabaseError as exc:
        _say(f"cannot read the pools from the database ({exc}); run `neutrino manage migrate`")
        return 2
    if row is None:
        known = ", ".join(nats_pool_names()) or "none"
        _say(f"pool {pool!r} does not exist (enabled NATS pools: {known}); create it in the dashboard first")
        return 2
    if row.mode != PoolMode.NATS:
        _say(f"pool {pool!r} is an http pool: its tasks run in the HTTP servers (neutrino serve --mode http)")
        return 2
    if not row.enabled:
        _say(f"pool {pool!r} is disabled; enable it in the dashboard before starting its workers")
        return 2
    slots = concurrency if concurrency is not None else row.concurrency
    if slots < 1:
        _say(f"--concurrency must be at least 1, not {slots}")
        return 2
    if not conf.nats_url:
        _say("no NATS server configured: pass --nats-url or set NEUTRINO_NATS_URL")
        return 2
    try:
        tasks = registered_tasks()
    except TaskDefinitionError as exc:
        _say(str(exc))
        return 2
    tracing.setup(enabled=conf.tracing, service_name=f"neutrino-worker-{pool}", exporter=conf.trace_exporter)
    worker = PoolWorker(pool=row, concurrency=slots, conf=conf, tasks=tasks)
    return _run_loop(worker.main)


def _say(message: str) -> None:
    print(f"neutrino worker: {message}", file=sys.stderr, flush=True)


def _run_loop(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


class PoolWorker:
    """The worker process of one pool: owns its settings, executor and shared state, builds the parts
    (NATS connection, fetcher, settler, control subscriptions, heartbeat, sweeper), runs them from
    `main()` and stops them in order on SIGTERM / SIGINT (`request_stop`)."""

    def __init__(self, *, pool: Pool, concurrency: int, conf: NeutrinoSettings,
                 tasks: dict[str, TaskSpec]) -> None:
        self.pool = pool.name
        self.kind = pool.kind
        self.concurrency = concurrency
        self.conf = conf
        self.served = sorted(name for name, spec in tasks.items() if spec.pool == pool.name)
        host = socket.gethostname()
        pid = os.getpid()
        self.worker_id = f"{host}:{pid}"
        self.spool_dir = tempfile.mkdtemp(prefix=SPOOL_DIR_PREFIX)
        start_method = "spawn" if pool.kind == PoolKind.GPU else conf.start_method
        self.executor = ex.Executor(
            ex.ExecutorSettings(
                task_modules=conf.task_modules,
                processes=concurrency,
                max_tasks_per_child=conf.max_tasks_per_child,
                max_result_bytes=conf.max_payload_bytes,
                start_method=start_method,
                pool=pool.name,  # [pools] the children run this pool's @app.on_worker_start hooks
                log_max_bytes=conf.log_max_bytes,
                # [objects] large results, bytes and neutrino.File leave the children as files here
                spool_dir=self.spool_dir, inline_result_bytes=conf.inline_result_bytes,
                max_object_bytes=conf.max_object_bytes,
            )
        )
        self.stop = StopFlags()
        self.runs = RunningTasks(self.executor)
        self.transitions = TransitionBatcher()
        # One NATS connection: the services publish through a bridge attached to it once it is up.
        self.bridge = NatsBridge(conf.nats_url, name=f"neutrino-worker-{pool.name}")
        self.ledger = LedgerWriter(queue_size=conf.ledger_queue_size, enabled=conf.ledger_enabled)
        self.ports = worker_ports(conf, bridge=self.bridge, ledger=self.ledger)
        self.background: list[asyncio.Task[None]] = []
        self.nats = NatsConnection(pool=self.pool, worker_id=self.worker_id, conf=conf, stop=self.stop)
        self.heartbeat = Heartbeat(worker_id=self.worker_id, pool=self.pool, host=host, pid=pid,
                                   concurrency=concurrency, started_at=timezone.now(), runs=self.runs,
                                   every_s=conf.heartbeat_s)
        self.settler = Settler(pool=self.pool, worker_id=self.worker_id, conf=conf, tasks=tasks,
                               executor=self.executor, runs=self.runs, transitions=self.transitions,
                               stop=self.stop, events=self.ports.events, ports=self.ports,
                               js=lambda: self.nats.js)
        self.slots = Slots(concurrency)
        self.fetcher = Fetcher(pool=self.pool, slots=self.slots, stop=self.stop,
                               handle=self.settler.handle, ensure_topology=self.nats.ensure_topology)

    async def main(self) -> int:
        """Serve until stopped. Returns the exit code: 0 stopped, 1 NATS refused us for good, 2 bad setup."""
        loop = asyncio.get_running_loop()
        loop.set_default_executor(
            ThreadPoolExecutor(max_workers=self.concurrency + 8, thread_name_prefix="neutrino-worker")
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig)
        self._banner()
        # The children start while NATS connects (each takes a few tenths of a second); a child that
        # cannot start still ends the worker at once, even while NATS is unreachable.
        starting = asyncio.create_task(asyncio.to_thread(self.executor.start))
        connecting = asyncio.create_task(self._connect())
        try:
            await starting
        except (TaskDefinitionError, ex.ExecutorError) as exc:
            connecting.cancel()
            logger.error("cannot start the worker processes: %s", exc)
            await asyncio.to_thread(self.executor.shutdown, wait=True, timeout_s=2.0)
            return 2
        self.heartbeat.gpus = await asyncio.to_thread(detect_gpus)
        self.background.append(asyncio.create_task(self.transitions.run(), name="transitions"))
        self.background.append(asyncio.create_task(self.heartbeat.run(), name="heartbeat"))
        code = 0
        psub = await connecting
        if psub is not None:
            self.background.append(asyncio.create_task(
                sweep_loop(ports=self.ports, pool=self.pool, conf=self.conf, stop=self.stop), name="sweeper"))
            logger.info("ready: pool %s, fetching from consumer %s (%d slots)",
                        self.pool, consumer_name(self.pool), self.concurrency)
            await self.fetcher.run(psub)
        elif not self.stop.requested.is_set():
            code = 1  # NATS refused us for good (not a plain outage: those are retried forever)
        await self._shutdown()
        return code

    def _banner(self) -> None:
        served = ", ".join(self.served) or "none (no registered task names this pool)"
        logger.info(
            "neutrino worker %s: pool %s (%s), concurrency %d, NATS %s, start method %s; tasks: %s",
            self.worker_id, self.pool, self.kind, self.concurrency, shown(self.conf.nats_url),
            self.executor.settings.start_method, served,
        )

    def request_stop(self, sig: int = signal.SIGTERM) -> None:
        """First signal: stop fetching, let running tasks finish. Second: stop waiting for them."""
        if self.stop.requested.is_set():
            logger.warning("%s again: not waiting for running tasks any longer", signal.Signals(sig).name)
            self.stop.hurry.set()
            return
        logger.info("%s: stopping; no new tasks", signal.Signals(sig).name)
        self.stop.requested.set()
        self.slots.release_waiters()
        self.fetcher.wake()

    async def _connect(self) -> JetStreamContext.PullSubscription | None:
        """Connect to NATS and set up the stream, consumer and subscriptions; None if that never worked."""
        if not await self.nats.connect():
            return None
        assert self.nats.js is not None and self.nats.nc is not None
        self.bridge.attach(loop=asyncio.get_running_loop(), nc=self.nats.nc)
        control = Control(js=self.nats.js, pool=self.pool, conf=self.conf, runs=self.runs, events=self.ports.events)
        psub = await self.nats.set_up(on_cancel=control.on_cancel, on_max_deliveries=control.on_max_deliveries)
        if psub is not None:
            await self._set_up_priorities()
        return psub

    async def _set_up_priorities(self) -> None:
        """The high and low levels beside the normal consumer (workers.pool_worker.priority)."""
        assert self.nats.js is not None and self.nats.nc is not None
        levels = PriorityLevels(pool=self.pool)
        try:
            await levels.set_up(self.nats.nc, self.nats.js)
        except Exception as exc:  # an older server's permissions: serve the normal level alone
            logger.warning("pool %s serves normal priority only: cannot bind its high and low consumers (%s)",
                           self.pool, exc)
            return
        self.fetcher.levels = levels
        self.background.append(asyncio.create_task(levels.poll_loop(self.nats.js, self.stop), name="priorities"))

    async def _shutdown(self) -> None:
        try:
            await self._stop_serving()
        finally:
            shutil.rmtree(self.spool_dir, ignore_errors=True)  # [objects] results not stored by now never will be

    async def _stop_serving(self) -> None:
        await self.nats.stop_deliveries()
        if self.fetcher.levels is not None:
            await self.fetcher.levels.stop_deliveries()
        handlers = self.fetcher.handlers  # the set shrinks as handlers finish
        if handlers:
            logger.info("waiting up to %.0f s for %d running task(s)", self.conf.worker_grace_s, len(handlers))
            hurry = asyncio.create_task(self.stop.hurry.wait())
            deadline = time.monotonic() + self.conf.worker_grace_s
            while handlers and not self.stop.hurry.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                await asyncio.wait([*handlers, hurry], timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            hurry.cancel()
        if handlers:
            self.runs.stop_all()
            await asyncio.wait(list(handlers), timeout=15.0)
        for task in self.background:
            task.cancel()
        try:
            await db(self.heartbeat.beat, stopped=True)
        except DatabaseError as exc:
            logger.warning("could not mark worker %s stopped: %s", self.worker_id, exc)
        await asyncio.to_thread(self.executor.shutdown, wait=True, timeout_s=5.0)
        await self.nats.drain()
        await asyncio.to_thread(self.ledger.close)
        logger.info("worker %s stopped", self.worker_id)
