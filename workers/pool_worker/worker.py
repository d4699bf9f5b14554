"""The worker of one NATS pool: `neutrino serve --mode nats --pool P [--concurrency N]`.

One asyncio loop (uvloop when installed) in a Django process:

    fetch (only as many messages as there are free slots)
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
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from neutrino.app import TaskDefinitionError, TaskSpec
from pools_app.models import Pool, PoolKind, PoolMode, Worker
from pools_app.selectors import nats_pool_names
from tasks_app import runtime
from tasks_app.core.conf import NeutrinoSettings, neutrino_settings
from tasks_app.core.registry import registered_tasks
from tasks_app.models import FINISHED_STATUSES, Task
from tasks_app.services import tasks as services
from workers.engine import executor as ex
from workers.engine.topology import (
    CANCEL_SUBJECT,
    MAX_DELIVERIES_ADVISORY,
    STREAM,
    BadMessage,
    ConsumerSettings,
    TaskMessage,
    consumer_name,
    decode_task_message,
    ensure_consumer,
    ensure_stream,
)

logger = logging.getLogger("neutrino.worker")

T = TypeVar("T")

FETCH_TIMEOUT_S = 1.0  # one pull request waits this long for messages
PROGRESS_INTERVAL_S = 0.25  # progress rows: at most ~4 writes a second per task
SWEEP_EVERY_S = 5.0  # how often the sweeper looks for unconfirmed pending rows
DB_RETRY_FOR_S = 60.0  # a result that cannot be written is retried this long before the message is left
DRAIN_TIMEOUT_S = 5.0


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


# --------------------------------------------------------------------------------------------------
# database calls, from threads


def _db_call(fn: Callable[..., T], kwargs: dict[str, Any]) -> T:
    """Call `fn(**kwargs)` in this thread; a dropped connection (database restart) is reopened once."""
    try:
        return fn(**kwargs)
    except (InterfaceError, OperationalError):
        connection.close()
        return fn(**kwargs)


async def _db(fn: Callable[..., T], /, **kwargs: Any) -> T:
    return await asyncio.to_thread(_db_call, fn, kwargs)


class _TransitionBatcher:
    """Runs the row transitions of concurrently handled tasks together: one thread hop, one transaction.

    Each handler awaits its own result as if it had called the service alone. With a handful of tasks in
    flight, a claim or a completion costs a share of one commit instead of a commit of its own; that commit,
    not the work, bounds a worker's rate for short tasks. If the shared transaction fails, each call is
    run alone, so one bad write cannot fail the others.
    """

    MAX_BATCH = 256

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[Callable[..., Any], dict[str, Any], asyncio.Future[Any]]] = asyncio.Queue()

    async def call(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((fn, kwargs, future))
        return await future

    async def run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.MAX_BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                outcomes = await asyncio.to_thread(_run_batch, [(fn, kwargs) for fn, kwargs, _ in batch])
            except BaseException as exc:  # the loop is stopping: nobody must wait forever
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(DatabaseError(f"not written: {exc!r}"))
                raise
            for (_, _, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)


def _run_batch(calls: list[tuple[Callable[..., Any], dict[str, Any]]]) -> list[tuple[bool, Any]]:
    if len(calls) > 1:
        try:
            with transaction.atomic():
                return [(True, fn(**kwargs)) for fn, kwargs in calls]
        except DatabaseError:
            pass  # rolled back as a whole: run each call alone below to find the one that fails
    outcomes: list[tuple[bool, Any]] = []
    for fn, kwargs in calls:
        try:
            outcomes.append((True, _db_call(fn, kwargs)))
        except DatabaseError as exc:
            outcomes.append((False, exc))
    return outcomes


def _row_state(*, task_id: str) -> tuple[str, int] | None:
    row = Task.objects.filter(id=task_id).values_list("status", "attempt").first()
    return None if row is None else (str(row[0]), int(row[1]))


def _cancel_requested(*, task_ids: list[str]) -> list[str]:
    if not task_ids:
        return []
    return [str(i) for i in Task.objects.filter(id__in=task_ids, cancel_requested=True).values_list("id", flat=True)]


def _detect_gpus() -> list[dict[str, str]]:
    """The GPUs nvidia-smi sees, or [] when there is none (or no nvidia-smi)."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    try:
        out = subprocess.run(
            [binary, "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        name, _, memory = line.partition(",")
        if name.strip():
            gpus.append({"name": name.strip(), "memory": memory.strip()})
    return gpus


# --------------------------------------------------------------------------------------------------
# the worker


@dataclass
class _Run:
    """A task this worker has claimed (or is claiming)."""

    task: TaskMessage
    attempt: int
    msgs: list[Msg]  # its deliveries; more than one when the broker redelivered it while it ran here
    started: float = field(default_factory=time.monotonic)
    child: str = ""  # the executor child's worker id, once it started
    cancel_requested: bool = False  # a user cancelled it
    stop_requested: bool = False  # the worker is stopping and killed it: hand it back, it did not fail
    last_progress: float = 0.0


class PoolWorker:
    def __init__(self, *, pool: Pool, concurrency: int, conf: NeutrinoSettings,
                 tasks: dict[str, TaskSpec]) -> None:
        self.pool = pool.name
        self.kind = pool.kind
        self.concurrency = concurrency
        self.conf = conf
        self.tasks = tasks
        self.served = sorted(name for name, spec in tasks.items() if spec.pool == pool.name)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.worker_id = f"{self.host}:{self.pid}"
        self.started_at: datetime = timezone.now()
        start_method = "spawn" if pool.kind == PoolKind.GPU else conf.start_method
        self.executor = ex.Executor(
            ex.ExecutorSettings(
                task_modules=conf.task_modules,
                processes=concurrency,
                max_tasks_per_child=conf.max_tasks_per_child,
                max_result_bytes=conf.max_payload_bytes,
                start_method=start_method,
                pool=pool.name,  # [pools] the children run this pool's @app.on_worker_start hooks
            )
        )
        self.gpus: list[dict[str, str]] = []
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self.psub: JetStreamContext.PullSubscription | None = None
        self.runs: dict[str, _Run] = {}
        self.handlers: set[asyncio.Task[None]] = set()
        self.background: list[asyncio.Task[None]] = []
        self.stopping = asyncio.Event()
        self.hurry = asyncio.Event()
        self.slot_freed = asyncio.Event()
        self.lock = threading.Lock()  # guards _Run fields the executor threads read
        self._unreachable_logged_at = -1e9
        self.beat_lock = threading.Lock()
        self.beat_stopped = False
        self.transitions = _TransitionBatcher()

    # ---- lifecycle --------------------------------------------------------------------------------

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(
            ThreadPoolExecutor(max_workers=self.concurrency + 8, thread_name_prefix="neutrino-worker")
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig)
        self._banner()
        try:
            await asyncio.to_thread(self.executor.start)
        except (TaskDefinitionError, ex.ExecutorError) as exc:
            logger.error("cannot start the worker processes: %s", exc)
            await asyncio.to_thread(self.executor.shutdown, wait=True, timeout_s=2.0)
            return 2
        self.gpus = await asyncio.to_thread(_detect_gpus)
        self.background.append(asyncio.create_task(self.transitions.run(), name="transitions"))
        self.background.append(asyncio.create_task(self._heartbeat_loop(), name="heartbeat"))
        code = 0
        if await self._connect() and await self._setup():
            self.background.append(asyncio.create_task(self._sweep_loop(), name="sweeper"))
            logger.info("ready: pool %s, fetching from consumer %s (%d slots)",
                        self.pool, consumer_name(self.pool), self.concurrency)
            await self._fetch_loop()
        elif not self.stopping.is_set():
            code = 1  # NATS refused us for good (not a plain outage: those are retried forever)
        await self._shutdown()
        return code

    def _banner(self) -> None:
        served = ", ".join(self.served) or "none (no registered task names this pool)"
        logger.info(
            "neutrino worker %s: pool %s (%s), concurrency %d, NATS %s, start method %s; tasks: %s",
            self.worker_id, self.pool, self.kind, self.concurrency, self.conf.nats_url,
            self.executor.settings.start_method, served,
        )

    def request_stop(self, sig: int = signal.SIGTERM) -> None:
        if self.stopping.is_set():
            logger.warning("%s again: not waiting for running tasks any longer", signal.Signals(sig).name)
            self.hurry.set()
            return
        logger.info("%s: stopping; no new tasks", signal.Signals(sig).name)
        self.stopping.set()
        self.slot_freed.set()

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, or wake early when the worker stops. Returns True when it is stopping."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    async def _connect(self) -> bool:
        """Connect, however long NATS takes to come up (each failed try is logged); False if stopped first."""
        connecting = asyncio.create_task(nats.connect(
            self.conf.nats_url,
            name=f"neutrino-worker-{self.pool}-{self.worker_id}",
            max_reconnect_attempts=-1,  # also retries the first connect forever
            reconnect_time_wait=0.5,
            connect_timeout=2,
            allow_reconnect=True,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        ))
        stopping = asyncio.create_task(self.stopping.wait())
        try:
            await asyncio.wait([connecting, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not connecting.done():
            connecting.cancel()
            try:
                await connecting
            except (asyncio.CancelledError, Exception):
                pass
            return False
        try:
            self.nc = connecting.result()
        except Exception as exc:
            logger.error("cannot connect to NATS at %s: %s", self.conf.nats_url, exc)
            return False
        self.js = self.nc.jetstream(timeout=5.0)
        logger.info("connected to NATS at %s", self.conf.nats_url)
        # The services publish task events through the process's bridge; connect it now, not during
        # the first task.
        await asyncio.to_thread(runtime.broker)
        return True

    async def _on_error(self, exc: Exception) -> None:
        if self.nc is None or not self.nc.is_connected:
            now = time.monotonic()
            if now - self._unreachable_logged_at >= 5.0:
                self._unreachable_logged_at = now
                logger.warning("cannot reach NATS at %s (%s: %s); retrying", self.conf.nats_url,
                               type(exc).__name__, exc)
            return
        logger.debug("NATS error: %s", exc)

    async def _on_disconnected(self) -> None:
        if not self.stopping.is_set():
            logger.warning("disconnected from NATS at %s; reconnecting", self.conf.nats_url)

    async def _on_reconnected(self) -> None:
        logger.info("reconnected to NATS at %s", self.conf.nats_url)

    async def _setup(self) -> bool:
        """The stream, this pool's consumer, the pull subscription and the control subscriptions."""
        assert self.nc is not None and self.js is not None
        subscribed = False
        while not self.stopping.is_set():
            try:
                await self._ensure_topology()
                if not subscribed:
                    await self.nc.subscribe(CANCEL_SUBJECT, cb=self._on_cancel)
                    # One worker of the pool handles each advisory (a queue group per pool).
                    await self.nc.subscribe(MAX_DELIVERIES_ADVISORY, queue=f"neutrino-advisory-{self.pool}",
                                            cb=self._on_max_deliveries)
                    subscribed = True
                self.psub = await self.js.pull_subscribe_bind(durable=consumer_name(self.pool), stream=STREAM)
                return True
            except Exception as exc:
                logger.warning("cannot set up stream %s / consumer %s yet (%s); retrying",
                               STREAM, consumer_name(self.pool), exc)
                if await self._sleep(1.0):
                    return False
        return False

    async def _ensure_topology(self) -> None:
        assert self.js is not None
        pools = await _db(nats_pool_names)
        if self.pool not in pools:
            pools.append(self.pool)
        await ensure_stream(self.js, pools, replicas=self.conf.stream_replicas)
        await ensure_consumer(
            self.js, self.pool,
            ConsumerSettings(ack_wait_s=self.conf.ack_wait_s, max_deliver=self.conf.max_deliver),
        )

    # ---- fetching ---------------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        assert self.psub is not None
        psub = self.psub
        failures = 0
        while not self.stopping.is_set():
            free = self.concurrency - len(self.handlers)
            if free <= 0:
                self.slot_freed.clear()
                await self.slot_freed.wait()
                continue
            try:
                msgs = await psub.fetch(free, timeout=FETCH_TIMEOUT_S)
            except nats.errors.TimeoutError:
                failures = 0
                continue
            except (nats.js.errors.NotFoundError, nats.js.errors.ServiceUnavailableError) as exc:
                # The stream or consumer is gone (a broker that lost its store) or JetStream restarts.
                failures += 1
                logger.warning("fetch from %s failed (%s); checking the stream and consumer",
                               consumer_name(self.pool), exc)
                if await self._sleep(min(0.5 * failures, 5.0)):
                    break
                try:
                    await self._ensure_topology()
                except Exception as again:
                    logger.debug("topology not ready yet: %s", again)
                continue
            except Exception as exc:  # reconnecting, connection closed, no responders
                failures += 1
                log = logger.warning if failures in (1, 10) or failures % 100 == 0 else logger.debug
                log("fetch from %s failed (%s: %s); retrying", consumer_name(self.pool), type(exc).__name__, exc)
                if await self._sleep(min(0.2 * failures, 2.0)):
                    break
                continue
            failures = 0
            for msg in msgs:
                if self.stopping.is_set():
                    await self._settle(msg, "nak")  # fetched as the worker stopped: another worker takes it
                    continue
                handler = asyncio.create_task(self._handle(msg))
                self.handlers.add(handler)
                handler.add_done_callback(self._handler_done)

    def _handler_done(self, handler: asyncio.Task[None]) -> None:
        self.handlers.discard(handler)
        self.slot_freed.set()
        if not handler.cancelled() and handler.exception() is not None:
            logger.error("message handler failed", exc_info=handler.exception())

    # ---- one message ------------------------------------------------------------------------------

    async def _handle(self, msg: Msg) -> None:
        try:
            task = decode_task_message(msg.data)
        except BadMessage as exc:
            logger.error("poison message on %s terminated: %s", msg.subject, exc)
            await self._settle(msg, "term")
            return
        attempt = int(msg.metadata.num_delivered)
        existing = self.runs.get(task.task_id)
        if existing is not None:
            # The broker redelivered a task this worker still runs (it lost the in-progress state,
            # e.g. across a restart): keep the new delivery alive too and settle both at the end.
            existing.msgs.append(msg)
            logger.info("task %s redelivered (delivery %d) while it runs here; continuing the run",
                        task.task_id, attempt)
            return
        run = _Run(task=task, attempt=attempt, msgs=[msg])
        self.runs[task.task_id] = run
        keeper = asyncio.create_task(self._keep_in_progress(run))
        try:
            await self._claim_and_run(run)
        finally:
            keeper.cancel()
            self.runs.pop(task.task_id, None)

    async def _claim_and_run(self, run: _Run) -> None:
        task = run.task
        try:
            claimed = await self.transitions.call(
                services.task_mark_running, task_id=task.task_id, attempt=run.attempt, worker_id=self.worker_id
            )
        except DatabaseError as exc:
            logger.error("cannot mark task %s running (%s); it comes back in a moment", task.task_id, exc)
            await self._settle_all(run, "nak", delay=self._backoff(1))
            return
        if not claimed:
            logger.info("skip %s %s (delivery %d): finished, cancelled or claimed by a newer attempt",
                        task.function, task.task_id, run.attempt)
            await self._settle_all(run, "ack")
            return
        if task.function not in self.tasks:
            await self._fail(run, f"unknown function {task.function} on pool {self.pool}", "UnknownTask", "")
            return
        # Claimed means the row says running: run it even if a SIGTERM just came (the grace period covers it).
        if run.cancel_requested:
            await self._settle_all(run, "term")
            return
        logger.info("start %s %s attempt %d", task.function, task.task_id, run.attempt)
        try:
            result = await asyncio.to_thread(
                self.executor.run,
                task_id=task.task_id,
                function=task.function,
                args=task.args,
                timeout_ms=task.timeout_ms,
                on_start=lambda child: self._on_child_start(run, child),
                on_progress=lambda fraction, message: self._on_progress(run, fraction, message),
            )
        except ex.ExecutorError as exc:
            await self._failed(run, exc)
            return
        except ValueError as exc:  # a message whose timeout is not a positive integer
            await self._fail(run, f"bad task message: {exc}", "BadMessage", "")
            return
        done = await self._write(services.task_mark_completed, run, task_id=task.task_id, attempt=run.attempt,
                                 result=result.value, duration_ms=result.duration_ms, worker_id=self.worker_id)
        if done is None:
            return
        if done:
            logger.info("end %s %s attempt %d: completed in %.1f ms", task.function, task.task_id,
                        run.attempt, result.duration_ms)
            await self._settle_all(run, "ack")
        else:
            await self._lost(run, "completed")

    async def _failed(self, run: _Run, exc: ex.ExecutorError) -> None:
        task = run.task
        duration_ms = (time.monotonic() - run.started) * 1000
        if isinstance(exc, ex.TaskCancelled | ex.ExecutorClosed):
            if run.stop_requested or isinstance(exc, ex.ExecutorClosed):
                await self._requeue(run, "the worker stopped before it finished")
            else:
                logger.info("end %s %s attempt %d: cancelled", task.function, task.task_id, run.attempt)
                await self._settle_all(run, "term")  # the cancel service already wrote the row
            return
        if isinstance(exc, ex.TaskTimeout) and exc.stage == "queue":
            # No child was free (one was being replaced): nothing ran; try again shortly.
            await self._requeue(run, "no worker process was free", delay=self._backoff(1))
            return
        if isinstance(exc, ex.UnknownTask):
            await self._fail(run, f"unknown function {task.function} on pool {self.pool}: {exc}", "UnknownTask",
                             "", duration_ms)
            return
        failure = ex.describe_failure(exc, function=task.function, timeout_ms=task.timeout_ms)
        error_type, error, traceback = failure.error_type, failure.message, failure.traceback
        exhausted = run.attempt >= self.conf.max_deliver
        if run.attempt <= task.max_retries and not exhausted:
            delay = self._backoff(run.attempt)
            logger.info("end %s %s attempt %d: %s; retrying in %.1f s", task.function, task.task_id,
                        run.attempt, error, delay)
            ok = await self._write(services.task_mark_retrying, run, task_id=task.task_id, attempt=run.attempt,
                                   error=error, error_type=error_type, traceback=traceback,
                                   duration_ms=duration_ms)
            if ok:
                await self._settle_all(run, "nak", delay=delay)
            elif ok is not None:
                await self._lost(run, "retrying")
            return
        if exhausted and run.attempt <= task.max_retries:
            error = (f"gave up after {run.attempt} deliveries: deliveries exhausted "
                     f"(NEUTRINO_MAX_DELIVER={self.conf.max_deliver}); last error: {error}")
        await self._fail(run, error, error_type, traceback, duration_ms)

    async def _fail(self, run: _Run, error: str, error_type: str, traceback: str,
                    duration_ms: float | None = None) -> None:
        task = run.task
        logger.info("end %s %s attempt %d: failed: %s", task.function, task.task_id, run.attempt, error)
        ok = await self._write(services.task_mark_failed, run, task_id=task.task_id, attempt=run.attempt,
                               error=error, error_type=error_type, traceback=traceback, duration_ms=duration_ms)
        if ok:
            await self._settle_all(run, "term")
        elif ok is not None:
            await self._lost(run, "failed")

    async def _requeue(self, run: _Run, why: str, *, delay: float | None = None) -> None:
        task = run.task
        logger.info("end %s %s attempt %d: handed back to the stream (%s)", task.function, task.task_id,
                    run.attempt, why)
        ok = await self._write(services.task_mark_requeued, run, task_id=task.task_id, attempt=run.attempt)
        if ok:
            await self._settle_all(run, "nak", delay=delay)
        elif ok is not None:
            await self._lost(run, "queued")

    async def _write(self, fn: Callable[..., bool], run: _Run, **kwargs: Any) -> bool | None:
        """A state change, retried while the database is unreachable. None: gave up (message left alone)."""
        deadline = time.monotonic() + DB_RETRY_FOR_S
        delay = 0.5
        while True:
            try:
                return await self.transitions.call(fn, **kwargs)
            except DatabaseError as exc:
                if time.monotonic() > deadline or self.hurry.is_set():
                    logger.error("cannot record task %s (%s): %s; the broker redelivers it after ack_wait",
                                 run.task.task_id, fn.__name__, exc)
                    return None
                logger.warning("cannot record task %s (%s): %s; retrying", run.task.task_id, fn.__name__, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _lost(self, run: _Run, wanted: str) -> None:
        """A state change did not apply: the row moved on (cancelled, finished, or a newer attempt owns it)."""
        try:
            state = await _db(_row_state, task_id=run.task.task_id)
        except DatabaseError:
            return  # unknown: leave the message, it comes back after ack_wait
        if state is None or state[0] in FINISHED_STATUSES:
            logger.info("task %s is %s already; not %s", run.task.task_id, state[0] if state else "gone", wanted)
            await self._settle_all(run, "term")
        else:
            # A newer delivery claimed it (on another worker): that one settles the message.
            logger.info("task %s is now %s at attempt %d; this attempt (%d) steps aside",
                        run.task.task_id, state[0], state[1], run.attempt)

    def _backoff(self, attempt: int) -> float:
        return float(min(self.conf.retry_backoff_s * 2 ** (attempt - 1), self.conf.retry_backoff_max_s))

    async def _settle_all(self, run: _Run, how: str, *, delay: float | None = None) -> None:
        for msg in run.msgs:
            await self._settle(msg, how, delay=delay)

    async def _settle(self, msg: Msg, how: str, *, delay: float | None = None) -> None:
        """ack / nak / term; a failure only means the broker redelivers it, which the claim handles."""
        try:
            if how == "ack":
                await msg.ack()
            elif how == "nak":
                await msg.nak(delay=delay)
            else:
                await msg.term()
        except Exception as exc:
            logger.warning("could not %s message %s (%s); it will be redelivered", how, msg.subject, exc)

    async def _keep_in_progress(self, run: _Run) -> None:
        interval = max(0.1, self.conf.ack_wait_s / 3)
        while True:
            await asyncio.sleep(interval)
            for msg in list(run.msgs):
                try:
                    await msg.in_progress()
                except Exception as exc:
                    logger.debug("in_progress for %s failed: %s", run.task.task_id, exc)

    # ---- callbacks from the executor's threads ----------------------------------------------------

    def _on_child_start(self, run: _Run, child: str) -> None:
        with self.lock:
            run.child = child
            cancel = run.cancel_requested or run.stop_requested
        if cancel:  # a cancel that came while the task was being handed to a child
            self.executor.cancel(run.task.task_id)

    def _on_progress(self, run: _Run, fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - run.last_progress < PROGRESS_INTERVAL_S and fraction < 1.0:
            return
        run.last_progress = now
        try:
            _db_call(services.task_record_progress, {"task_id": run.task.task_id, "attempt": run.attempt,
                                                     "fraction": fraction, "message": message})
        except DatabaseError as exc:
            logger.debug("progress of %s not recorded: %s", run.task.task_id, exc)

    # ---- control subscriptions --------------------------------------------------------------------

    async def _on_cancel(self, msg: Msg) -> None:
        try:
            task_id = json.loads(msg.data).get("task_id")
        except (ValueError, AttributeError):
            return
        if isinstance(task_id, str):
            self._cancel(task_id)

    def _cancel(self, task_id: str) -> None:
        run = self.runs.get(task_id)
        if run is None:
            return
        with self.lock:
            run.cancel_requested = True
        if self.executor.cancel(task_id):
            logger.info("cancel %s %s: killing its worker process", run.task.function, task_id)

    async def _on_max_deliveries(self, msg: Msg) -> None:
        """A message that reached max_deliver: its worker died on the last delivery. Fail it and delete it."""
        assert self.js is not None
        try:
            body = json.loads(msg.data)
            seq = int(body["stream_seq"])
        except (ValueError, KeyError, TypeError):
            return
        if body.get("stream") != STREAM or body.get("consumer") != consumer_name(self.pool):
            return
        deliveries = body.get("deliveries", self.conf.max_deliver)
        try:
            raw = await self.js.get_msg(STREAM, seq)
        except nats.js.errors.NotFoundError:
            return
        except Exception as exc:
            logger.warning("cannot read message %d after max deliveries: %s", seq, exc)
            return
        try:
            task = decode_task_message(raw.data or b"")
        except BadMessage:
            task = None
        if task is not None and task.task_id in self.runs:
            return  # it still runs here; this worker settles it
        if task is not None:
            error = (f"gave up after {deliveries} deliveries: the worker running it stopped or died each time "
                     f"(NEUTRINO_MAX_DELIVER={self.conf.max_deliver}); deliveries exhausted")
            try:
                failed = await _db(services.task_mark_failed, task_id=task.task_id, attempt=None, error=error,
                                   error_type="DeliveriesExhausted")
            except DatabaseError as exc:
                logger.error("cannot fail task %s after max deliveries: %s", task.task_id, exc)
                return  # keep the message: a later advisory or a person can act on it
            if failed:
                logger.info("end %s %s: failed: %s", task.function, task.task_id, error)
        try:
            await self.js.delete_msg(STREAM, seq)
        except Exception as exc:
            logger.debug("delete of message %d failed: %s", seq, exc)

    # ---- heartbeats and the sweeper ---------------------------------------------------------------

    def _beat(self, *, stopped: bool = False) -> None:
        # A beat still in flight when the worker stops must not write over its stopped_at.
        with self.beat_lock:
            if self.beat_stopped:
                return
            self.beat_stopped = stopped
            self._write_beat(stopped=stopped)

    def _write_beat(self, *, stopped: bool) -> None:
        now = timezone.now()
        fields: dict[str, Any] = {
            "pool": self.pool, "host": self.host, "pid": self.pid, "concurrency": self.concurrency,
            "running": len(self.runs), "gpus": self.gpus, "last_heartbeat": now,
            "stopped_at": now if stopped else None,
        }
        if Worker.objects.filter(worker_id=self.worker_id).update(**fields):
            return
        try:
            Worker.objects.create(worker_id=self.worker_id, started_at=self.started_at, **fields)
        except IntegrityError:
            Worker.objects.filter(worker_id=self.worker_id).update(**fields)

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await _db(self._beat)
                # Cancels whose message this worker missed (it was disconnected) are in the rows.
                for task_id in await _db(_cancel_requested, task_ids=list(self.runs)):
                    self._cancel(task_id)
            except DatabaseError as exc:
                logger.warning("heartbeat not written: %s", exc)
            except Exception:
                logger.exception("heartbeat failed")
            await asyncio.sleep(self.conf.heartbeat_s)

    async def _sweep_loop(self) -> None:
        every = max(0.5, min(SWEEP_EVERY_S, self.conf.sweep_after_s))
        while not await self._sleep(every):
            try:
                count = await _db(services.task_republish_pending, pool=self.pool,
                                  older_than_s=self.conf.sweep_after_s)
            except Exception as exc:
                logger.warning("sweeper: %s: %s", type(exc).__name__, exc)
                continue
            if count:
                logger.info("sweeper republished %d pending task(s) of pool %s", count, self.pool)

    # ---- stopping ---------------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        if self.psub is not None:
            # No more deliveries to this worker. (Its pending queue is never "joined", so leaving it
            # subscribed would make the drain below wait for its timeout.)
            try:
                await self.psub.unsubscribe()
            except Exception as exc:
                logger.debug("unsubscribe: %s", exc)
        if self.handlers:
            logger.info("waiting up to %.0f s for %d running task(s)", self.conf.worker_grace_s, len(self.handlers))
            hurry = asyncio.create_task(self.hurry.wait())
            deadline = time.monotonic() + self.conf.worker_grace_s
            while self.handlers and not self.hurry.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                await asyncio.wait([*self.handlers, hurry], timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            hurry.cancel()
        if self.handlers:
            for run in list(self.runs.values()):
                with self.lock:
                    run.stop_requested = True
                self.executor.cancel(run.task.task_id)
            await asyncio.wait(list(self.handlers), timeout=15.0)
        for task in self.background:
            task.cancel()
        try:
            await _db(self._beat, stopped=True)
        except DatabaseError as exc:
            logger.warning("could not mark worker %s stopped: %s", self.worker_id, exc)
        await asyncio.to_thread(self.executor.shutdown, wait=True, timeout_s=5.0)
        if self.nc is not None:
            try:
                await asyncio.wait_for(self.nc.drain(), timeout=DRAIN_TIMEOUT_S)
            except Exception as exc:
                logger.debug("NATS drain: %s", exc)
                await self.nc.close()
        await asyncio.to_thread(runtime.shutdown)
        logger.info("worker %s stopped", self.worker_id)
