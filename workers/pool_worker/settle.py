"""One message, from claim to settlement: mark the row running, run the task in the executor, write the
outcome (completed, retrying, failed, requeued), then ack / nak / term every delivery of it. While the task
runs, its deliveries are kept in progress so the broker does not hand it to another worker."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from neutrino.app import TaskSpec
from tasks_app.core.conf import NeutrinoSettings
from tasks_app.core.ports import Ports, TaskEvents
from tasks_app.models import FINISHED_STATUSES, Task
from tasks_app.services import logs as log_services
from tasks_app.services import tasks as services
from tasks_app.services.tasks import LogPieces
from workers.engine import executor as ex
from workers.engine import tracing
from workers.engine.objects import store_spooled
from workers.engine.spool import spooled
from workers.engine.topology import BadMessage, TaskMessage, decode_task_message
from workers.pool_worker.db import TransitionBatcher, db, db_call
from workers.pool_worker.limits import LimitWait, LimitWaits, claim_for, delivery_attempt
from workers.pool_worker.state import Run, RunningTasks, SlotTicket, StopFlags
from workers.pool_worker.tracing import attempt_span, run_attributes

logger = logging.getLogger("neutrino.worker")

PROGRESS_INTERVAL_S = 0.25  # progress rows: at most ~4 writes a second per task
DB_RETRY_FOR_S = 60.0  # a result that cannot be written is retried this long before the message is left


class Settler:
    """Handles one fetched message: claim its row, run it, record the outcome, settle its deliveries.

    At-least-once: a delivery is acked only after the row says completed; when a row cannot be written
    for `DB_RETRY_FOR_S`, the message is left alone and the broker redelivers it after ack_wait.
    """

    def __init__(self, *, pool: str, worker_id: str, conf: NeutrinoSettings, tasks: dict[str, TaskSpec],
                 executor: ex.Executor, runs: RunningTasks, transitions: TransitionBatcher,
                 stop: StopFlags, events: TaskEvents, ports: Ports | None = None,
                 js: Callable[[], JetStreamContext | None] | None = None) -> None:
        self.pool = pool
        self.js = js  # [objects] the worker's JetStream context, once connected: large results go there
        self.events = events
        self.ports = ports  # final writes hand it on: a group callback they fire is published at once
        self.worker_id = worker_id
        self.conf = conf
        self.tasks = tasks
        self.executor = executor
        self.runs = runs
        self.transitions = transitions
        self.stop = stop
        self.limit_waits = LimitWaits(stop=stop, ack_wait_s=conf.ack_wait_s,
                                      max_waiting=4 * executor.settings.processes)

    async def handle(self, msg: Msg, ticket: SlotTicket) -> None:
        try:
            await self._handle(msg, ticket)
        finally:
            ticket.release()

    async def _handle(self, msg: Msg, ticket: SlotTicket) -> None:
        try:
            task = decode_task_message(msg.data)
        except BadMessage as exc:
            logger.error("poison message on %s terminated: %s", msg.subject, exc)
            await settle(msg, "term")
            return
        attempt = delivery_attempt(msg)  # [limits] a limit's wait spends no attempt
        existing = self.runs.get(task.task_id)
        if existing is not None:
            # The broker redelivered a task this worker still runs or holds (it lost the in-progress
            # state, e.g. across a restart): keep the new delivery alive too and settle both at the end.
            existing.msgs.append(msg)
            logger.info("task %s redelivered (delivery %d) while it runs here; continuing the run",
                        task.task_id, attempt)
            return
        run = Run(task=task, attempt=attempt, msgs=[msg])
        self.runs.add(run)
        keeper = InProgressKeeper(run, ack_wait_s=self.conf.ack_wait_s)
        try:
            with attempt_span(msg, task, attempt=attempt, pool=self.pool):
                if await ticket.take():
                    await self._claim_and_run(run, ticket)
                else:  # held for a slot while the worker began to stop: another worker takes it
                    await settle_all(run, "nak")
        finally:
            keeper.stop()
            self.runs.discard(task.task_id)

    async def _claim_and_run(self, run: Run, ticket: SlotTicket) -> None:
        task = run.task
        try:
            with tracing.span("neutrino.claim"):
                claimed = await self.transitions.call(
                    claim_for(self.tasks.get(task.function)), events=self.events, task_id=task.task_id,
                    pool=self.pool, attempt=run.attempt, worker_id=self.worker_id,
                )
        except DatabaseError as exc:
            logger.error("cannot mark task %s running (%s); it comes back in a moment", task.task_id, exc)
            await settle_all(run, "nak", delay=self._backoff(1))
            return
        if isinstance(claimed, LimitWait):  # [limits] its key or rate is full: it waits, holding no slot
            ticket.release()
            await self.limit_waits.wait(run, claimed)
            return
        if claimed is None:
            logger.info("skip %s (delivery %d): finished, cancelled, claimed by a newer attempt or not of pool %s",
                        task.task_id, run.attempt, self.pool)
            await settle_all(run, "ack")
            return
        # From here on the run is what the row says, whatever the message said.
        run.task = task = TaskMessage(task_id=claimed.task_id, function=claimed.function, args=claimed.args,
                                      max_retries=claimed.max_retries, timeout_ms=claimed.timeout_ms)
        if task.function not in self.tasks:
            await self._fail(run, f"unknown function {task.function} on pool {self.pool}", "UnknownTask", "")
            return
        # Claimed means the row says running: run it even if a SIGTERM just came (the grace period covers it).
        if run.cancel_requested:
            await settle_all(run, "term")
            return
        logger.info("start %s %s attempt %d", task.function, task.task_id, run.attempt)
        run.claimed = True
        started = time.monotonic()
        try:
            with tracing.span("neutrino.run", attributes=run_attributes(task, attempt=run.attempt, pool=self.pool)):
                result = await asyncio.to_thread(
                    self.executor.run,
                    task_id=task.task_id,
                    function=task.function,
                    args=task.args,
                    timeout_ms=task.timeout_ms,
                    on_start=lambda child: self.runs.on_child_start(run, child),
                    on_progress=lambda fraction, message: _on_progress(self.events, run, fraction, message),
                    on_log=LogPieces(lambda seq, data, dropped: _on_log(self.events, run, seq, data, dropped)),
                )
        except ex.ExecutorError as exc:
            ticket.release()
            await self._failed(run, exc)
            return
        except ValueError as exc:  # a row whose timeout is not a positive integer
            ticket.release()
            await self._fail(run, f"bad task: {exc}", "BadTask", "")
            return
        # The child is free: the next message claims it while this outcome is written.
        ticket.slots.ran(time.monotonic() - started)
        ticket.release()
        value = result.value
        if spooled(value) is not None:  # [objects] a large result waits in a file: store it, keep a reference
            value = await self._store_object(run, value)
            if value is None:
                return
        done = await self._write(services.task_mark_completed, run, task_id=task.task_id, attempt=run.attempt,
                                 result=value, duration_ms=result.duration_ms, worker_id=self.worker_id,
                                 ports=self.ports)
        if done is None:
            return
        if done:
            logger.info("end %s %s attempt %d: completed in %.1f ms", task.function, task.task_id,
                        run.attempt, result.duration_ms)
            await settle_all(run, "ack")
        else:
            await self._lost(run, "completed")

    async def _store_object(self, run: Run, value: Any) -> Any:
        """[objects] The reference a row stores for a result the child left in a file; None when it could not
        be stored (a file that cannot be read fails the task; a NATS error hands the task back to the stream)."""
        marker = spooled(value)
        assert marker is not None
        js = self.js() if self.js is not None else None
        try:
            if js is None:
                raise ConnectionError("not connected to NATS")
            return await store_spooled(js, marker, name=run.task.task_id)
        except OSError as exc:
            await self._fail(run, f"result of task {run.task.task_id} cannot be read: {exc}", "ResultError", "")
        except Exception as exc:
            logger.warning("result of task %s not stored in the object store (%s)", run.task.task_id, exc)
            await self._requeue(run, f"result not stored: {exc}", delay=self._backoff(run.attempt))
        return None

    async def _failed(self, run: Run, exc: ex.ExecutorError) -> None:
        task = run.task
        duration_ms = (time.monotonic() - run.started) * 1000
        if isinstance(exc, ex.TaskCancelled | ex.ExecutorClosed):
            if run.stop_requested or isinstance(exc, ex.ExecutorClosed):
                await self._requeue(run, "the worker stopped before it finished")
            else:
                logger.info("end %s %s attempt %d: cancelled", task.function, task.task_id, run.attempt)
                await settle_all(run, "term")  # the cancel service already wrote the row
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
                await settle_all(run, "nak", delay=delay)
            elif ok is not None:
                await self._lost(run, "retrying")
            return
        if exhausted and run.attempt <= task.max_retries:
            error = (f"gave up after {run.attempt} deliveries: deliveries exhausted "
                     f"(NEUTRINO_MAX_DELIVER={self.conf.max_deliver}); last error: {error}")
        await self._fail(run, error, error_type, traceback, duration_ms)

    async def _fail(self, run: Run, error: str, error_type: str, traceback: str,
                    duration_ms: float | None = None) -> None:
        task = run.task
        logger.info("end %s %s attempt %d: failed: %s", task.function, task.task_id, run.attempt, error)
        ok = await self._write(services.task_mark_failed, run, task_id=task.task_id, attempt=run.attempt,
                               error=error, error_type=error_type, traceback=traceback, duration_ms=duration_ms,
                               ports=self.ports)
        if ok:
            await settle_all(run, "term")
        elif ok is not None:
            await self._lost(run, "failed")

    async def _requeue(self, run: Run, why: str, *, delay: float | None = None) -> None:
        task = run.task
        logger.info("end %s %s attempt %d: handed back to the stream (%s)", task.function, task.task_id,
                    run.attempt, why)
        ok = await self._write(services.task_mark_requeued, run, task_id=task.task_id, attempt=run.attempt)
        if ok:
            await settle_all(run, "nak", delay=delay)
        elif ok is not None:
            await self._lost(run, "queued")

    async def _write(self, fn: Callable[..., bool], run: Run, **kwargs: Any) -> bool | None:
        """A state change, retried while the database is unreachable. None: gave up (message left alone)."""
        deadline = time.monotonic() + DB_RETRY_FOR_S
        delay = 0.5
        while True:
            try:
                with tracing.span("neutrino.complete", attributes={"neutrino.outcome": fn.__name__}):
                    return await self.transitions.call(fn, events=self.events, **kwargs)
            except DatabaseError as exc:
                if time.monotonic() > deadline or self.stop.hurry.is_set():
                    logger.error("cannot record task %s (%s): %s; the broker redelivers it after ack_wait",
                                 run.task.task_id, fn.__name__, exc)
                    return None
                logger.warning("cannot record task %s (%s): %s; retrying", run.task.task_id, fn.__name__, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _lost(self, run: Run, wanted: str) -> None:
        """A state change did not apply: the row moved on (cancelled, finished, or a newer attempt owns it)."""
        try:
            state = await db(_row_state, task_id=run.task.task_id)
        except DatabaseError:
            return  # unknown: leave the message, it comes back after ack_wait
        if state is None or state[0] in FINISHED_STATUSES:
            logger.info("task %s is %s already; not %s", run.task.task_id, state[0] if state else "gone", wanted)
            await settle_all(run, "term")
        else:
            # A newer delivery claimed it (on another worker): that one settles the message.
            logger.info("task %s is now %s at attempt %d; this attempt (%d) steps aside",
                        run.task.task_id, state[0], state[1], run.attempt)

    def _backoff(self, attempt: int) -> float:
        return float(min(self.conf.retry_backoff_s * 2 ** (attempt - 1), self.conf.retry_backoff_max_s))


def _row_state(*, task_id: str) -> tuple[str, int] | None:
    row = Task.objects.filter(id=task_id).values_list("status", "attempt").first()
    return None if row is None else (str(row[0]), int(row[1]))


def _on_progress(events: TaskEvents, run: Run, fraction: float, message: str) -> None:
    """Called from the executor's thread; writes at most one progress row per `PROGRESS_INTERVAL_S`."""
    now = time.monotonic()
    if now - run.last_progress < PROGRESS_INTERVAL_S and fraction < 1.0:
        return
    run.last_progress = now
    try:
        db_call(services.task_record_progress, {"events": events, "task_id": run.task.task_id, "attempt": run.attempt,
                                                "fraction": fraction, "message": message})
    except DatabaseError as exc:
        logger.debug("progress of %s not recorded: %s", run.task.task_id, exc)


def _on_log(events: TaskEvents, run: Run, seq: int, data: bytes, dropped_bytes: int) -> None:
    """Called from the executor's thread with a piece of the attempt's log: stored at once (live tails)."""
    try:
        db_call(log_services.task_log_append, {"events": events, "task_id": run.task.task_id, "attempt": run.attempt,
                                               "seq": seq, "data": data, "dropped_bytes": dropped_bytes})
    except DatabaseError as exc:
        logger.warning("a piece of the log of %s (attempt %d) was not stored: %s", run.task.task_id, run.attempt, exc)


async def settle_all(run: Run, how: str, *, delay: float | None = None) -> None:
    for msg in run.msgs:
        await settle(msg, how, delay=delay)


async def settle(msg: Msg, how: str, *, delay: float | None = None) -> None:
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


class InProgressKeeper:
    """Tells the broker every ack_wait/3 that the run's deliveries are still being worked on, until stopped.

    A timer rather than a task per message: most tasks end before it first fires, and a timer costs
    nothing to cancel where a sleeping task costs a wake-up."""

    def __init__(self, run: Run, *, ack_wait_s: float) -> None:
        self.run = run
        self.interval = max(0.1, ack_wait_s / 3)
        self.loop = asyncio.get_running_loop()
        self.timer = self.loop.call_later(self.interval, self._fire)
        self.sending: asyncio.Task[None] | None = None

    def stop(self) -> None:
        self.timer.cancel()
        if self.sending is not None:
            self.sending.cancel()

    def _fire(self) -> None:
        if self.sending is None or self.sending.done():
            self.sending = self.loop.create_task(self._send())
        self.timer = self.loop.call_later(self.interval, self._fire)

    async def _send(self) -> None:
        for msg in list(self.run.msgs):
            try:
                await msg.in_progress()
            except Exception as exc:
                logger.debug("in_progress for %s failed: %s", self.run.task.task_id, exc)
