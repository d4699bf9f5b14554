"""The `Executor` callers hold, and its call path: start the pool, wait for an idle child, hand it
the task, and wait for its reply, progress reports and deadline.

Watching and killing children is in `supervise`, starting them in `spawn`.
"""

from __future__ import annotations

import atexit
import json
import logging
import multiprocessing
import os
import pickle
import sys
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from workers.engine.child import BadReply, read_reply
from workers.engine.executor import supervise
from workers.engine.executor.errors import (
    ExecutorClosed,
    ExecutorError,
    TaskCancelled,
    TaskTimeout,
    error_from_reply,
)
from workers.engine.executor.pool import Child, Job, Pool
from workers.engine.executor.settings import START_TIMEOUT_S, ExecutorSettings
from workers.engine.executor.spawn import Spawner

logger = logging.getLogger("neutrino.executor")

# While a task runs, what it wrote is handed on this often (live log tails); and once more at its end.
LOG_TAIL_S = 0.5
# (records as UTF-8 text in the format of `workers.engine.logs.format`, bytes the cap left out so far)
LogCallback = Callable[[bytes, int], None]


@dataclass(frozen=True)
class RunResult:
    """What a successful `Executor.run` returns."""

    value: Any  # the result, as decoded from JSON (json.loads(result_json))
    result_json: str  # the JSON text the child produced
    duration_ms: float  # time spent in the function inside the child
    worker_id: str  # f"{hostname}:{child_pid}"


class Executor:
    """A pool of pre-started child processes that runs task functions with hard deadlines.

    See the `workers.engine.executor` docstring for the mechanism, what it can and cannot do, and
    the errors.
    """

    def __init__(self, settings: ExecutorSettings) -> None:
        self.settings = settings
        self._ctx = multiprocessing.get_context(settings.start_method)
        self._pool = Pool(settings)
        self._spawner = Spawner(self._pool, self._ctx)
        self._start_lock = threading.Lock()
        self._started = False
        self._owner_pid = os.getpid()
        atexit.register(_shutdown_at_exit, weakref.ref(self))

    # ---- public API -------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """How many children the pool keeps alive."""
        return self.settings.processes

    def start(self) -> None:
        """Start all children now and wait until they have imported the task modules (idempotent).

        Raises `TaskDefinitionError` when a child cannot import the task modules, `ExecutorClosed`
        after `shutdown()`, `ExecutorError` when the children do not start in time.
        """
        if self._started:
            return
        with self._start_lock:
            if self._started:
                return
            self._check_usable("")
            if self.settings.start_method == "forkserver":
                # Effective when the fork server starts (once per parent process): each child is then
                # a fork of a process that already imported these, not a fresh interpreter. Only task
                # modules this process imported already are preloaded: the fork server survives an
                # ImportError but dies of any other exception a module raises while importing, and a
                # child reports such an error far better (start() raises it). As with "spawn", each
                # child still runs the parent's main script as __mp_main__ (guard it with
                # `if __name__ == "__main__":`).
                imported = [name for name in self.settings.task_modules if name in sys.modules]
                # child_env comes first: it scrubs the fork server's environment before any task module runs.
                self._ctx.set_forkserver_preload(["workers.engine.child_env", "neutrino", "workers.engine.child",
                                                  *imported])
            self._spawner.ensure_started()
            future: Future[None] = Future()
            self._pool.jobs.put(Job("start", count=self.settings.processes, future=future))
            try:
                future.result(timeout=START_TIMEOUT_S + 10.0)
            except TimeoutError:
                raise ExecutorError(
                    f"the worker processes did not start within {START_TIMEOUT_S:.0f} s"
                ) from None
            self._started = True

    def run(
        self,
        *,
        task_id: str,
        function: str,
        args: dict[str, Any],
        timeout_ms: int,
        on_start: Callable[[str], None] | None = None,
        on_progress: Callable[[float, str], None] | None = None,
        on_log: LogCallback | None = None,
    ) -> RunResult:
        """Run `function(**args)` in a child and return its result; block until it finishes.

        Waits at most `timeout_ms` for a free child, then gives the task `timeout_ms` to run (see the
        package docstring). `on_start(worker_id)` is called once the task was handed to a child, and
        `on_progress(fraction, message)` for each `neutrino.progress(...)` report, both in this
        thread; an exception they raise is logged and does not affect the task.

        `on_log(records, dropped_bytes)` receives what the task wrote (`workers.engine.logs.format`):
        every LOG_TAIL_S while it runs, and once more when it ended, also when it was killed (its
        deadline, a cancel) or died, before this call returns or raises. `dropped_bytes` counts, so far,
        what the cap (`log_max_bytes`) left out. Without `on_log` nothing is read.
        """
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms <= 0:
            raise ValueError(f"timeout_ms must be a positive integer, got {timeout_ms!r}")
        self._check_usable(task_id)
        if not self._started:
            self.start()
        try:
            payload = pickle.dumps((task_id, function, args, timeout_ms), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise ExecutorError(
                f"the arguments of task {task_id} ({function}) cannot be sent to a worker process: {exc}",
                task_id=task_id,
            ) from None
        queue_deadline = time.monotonic() + timeout_ms / 1000
        while True:
            child = self._acquire(task_id, function, timeout_ms, queue_deadline)
            try:
                if child.log is not None:
                    child.log.begin()
                child.conn.send_bytes(payload)
                break
            except OSError:  # the child died while idle: replace it and take another
                supervise.drop(self._pool, child, "lost")
            except BaseException:
                supervise.drop(self._pool, child, "lost", only_if_task=task_id)
                raise
        try:
            deadline = time.monotonic() + timeout_ms / 1000
            if on_start is not None:
                _call_back(on_start, child.worker_id)
            return self._await_reply(child, task_id, function, timeout_ms, deadline, on_progress,
                                     on_log if child.log is not None else None)
        except ExecutorError:
            raise
        except BaseException:
            # Something outside the protocol (KeyboardInterrupt in the main thread, a bug): the child
            # may still be running the task, so it cannot go back to the pool.
            supervise.drop(self._pool, child, "lost", only_if_task=task_id)
            raise

    def cancel(self, task_id: str) -> bool:
        """Kill the child running `task_id`; its `run()` raises `TaskCancelled`.

        A call still waiting for a free child is cancelled too. Returns False when the task is not
        running or waiting here (finished already, never seen, or running on another machine).
        """
        return supervise.cancel(self._pool, task_id)

    def running(self) -> dict[str, str]:
        """task_id -> worker_id of every task running now."""
        with self._pool.lock:
            return {task_id: child.worker_id for task_id, child in self._pool.running.items()}

    def child_pids(self) -> list[int]:
        """The pids of the children in the pool (idle or running)."""
        with self._pool.lock:
            return sorted(child.pid for child in self._pool.members)

    def shutdown(self, *, wait: bool = True, timeout_s: float = 5.0) -> None:
        """Stop the children: idle ones exit cleanly, running ones are killed (their calls get
        `ExecutorClosed`). With `wait`, block until all are gone, at most about `timeout_s`."""
        supervise.close(self._pool, timeout_s)
        if wait:
            self._spawner.join(timeout_s + 2.0)

    # ---- run() internals --------------------------------------------------------------------------

    def _check_usable(self, task_id: str) -> None:
        if self._pool.closed:
            raise ExecutorClosed("the executor was shut down", task_id=task_id)
        if os.getpid() != self._owner_pid:
            raise ExecutorError(
                f"this executor belongs to process {self._owner_pid} and cannot be used in process "
                f"{os.getpid()} (a fork of it); create the executor after forking",
                task_id=task_id,
            )

    def _acquire(self, task_id: str, function: str, timeout_ms: int, deadline: float) -> Child:
        pool = self._pool
        with pool.cond:
            if task_id in pool.running:
                raise ExecutorError(f"task {task_id} is already running in this executor", task_id=task_id)
            pool.waiting[task_id] += 1
            try:
                while True:
                    if pool.closed:
                        raise ExecutorClosed(
                            f"the executor was shut down before task {task_id} ({function}) started",
                            task_id=task_id,
                        )
                    if task_id in pool.cancel_waiting:
                        pool.cancel_waiting.discard(task_id)
                        raise TaskCancelled(
                            f"task {task_id} ({function}) was cancelled while it waited for a worker process",
                            task_id=task_id,
                        )
                    if pool.idle:
                        child = pool.idle.pop()
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        hint = f"; the last worker start failed: {pool.last_start_error}" if (
                            pool.last_start_error and len(pool.members) < self.settings.processes
                        ) else ""
                        raise TaskTimeout(
                            f"no free worker process within {timeout_ms} ms for task {task_id} ({function}): "
                            f"all {len(pool.members)} are busy{hint}",
                            task_id=task_id,
                            timeout_ms=timeout_ms,
                            stage="queue",
                        )
                    pool.cond.wait(remaining)
            finally:
                pool.waiting[task_id] -= 1
                if not pool.waiting[task_id]:
                    del pool.waiting[task_id]
            child.task_id = task_id
            pool.running[task_id] = child
            return child

    def _await_reply(
        self,
        child: Child,
        task_id: str,
        function: str,
        timeout_ms: int,
        deadline: float,
        on_progress: Callable[[float, str], None] | None,
        on_log: LogCallback | None,
    ) -> RunResult:
        conn = child.conn
        tail_at = time.monotonic() + LOG_TAIL_S
        while True:
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                error = supervise.deadline_passed(self._pool, child, task_id, function, timeout_ms)
                raise _with_last_lines(error, child, on_log)
            if on_log is not None and now >= tail_at:
                tail_at = now + LOG_TAIL_S
                _pass_log(child, on_log, final=False)
            try:
                if not conn.poll(remaining if on_log is None else min(remaining, max(0.0, tail_at - now))):
                    continue  # the deadline is checked above, so a poll that wakes early is harmless
                message = read_reply(conn)
            except (EOFError, OSError):
                error = supervise.child_lost(self._pool, child, task_id, function)
                raise _with_last_lines(error, child, on_log) from None
            except BadReply as exc:  # task code wrote on the pipe: the child cannot be trusted any more
                error = supervise.broke_protocol(self._pool, child, task_id, function, str(exc))
                raise _with_last_lines(error, child, on_log) from None
            kind = message[0]
            if message[1] != task_id:
                continue  # a late progress report from a thread an earlier task left behind
            if kind == "progress":
                if on_progress is not None:
                    _call_back(on_progress, message[2], message[3])
                continue
            if kind == "ok":
                try:
                    value = json.loads(message[2])
                except ValueError as exc:
                    raise supervise.broke_protocol(self._pool, child, task_id, function,
                                                   f"its result is not JSON: {exc}") from None
            if on_log is not None:  # before the child goes back to the pool and takes another task
                _pass_log(child, on_log, final=True)
            supervise.release(self._pool, child, task_id, function)
            if kind == "ok":
                return RunResult(
                    value=value,
                    result_json=message[2],
                    duration_ms=message[3],
                    worker_id=child.worker_id,
                )
            raise error_from_reply(message, task_id, function, child.worker_id)


def _pass_log(child: Child, on_log: LogCallback, *, final: bool) -> None:
    """Hand what the task wrote since the last read to `on_log` (nothing when it wrote nothing)."""
    assert child.log is not None
    try:
        new = child.log.read(final=final)
    except (OSError, ValueError) as exc:  # the buffer was closed under us (shutdown)
        logger.warning("log of the task in worker process %d not read: %s", child.pid, exc)
        return
    if new is not None:
        _call_back(on_log, *new)


def _with_last_lines(error: ExecutorError, child: Child, on_log: LogCallback | None) -> ExecutorError:
    """The child was killed or died: what it wrote before is still in its buffer; pass it on, then raise."""
    if on_log is not None:
        _pass_log(child, on_log, final=True)
    return error


def _call_back(callback: Callable[..., None], *args: Any) -> None:
    try:
        callback(*args)
    except Exception:
        logger.exception("executor callback %r raised; the task goes on", callback)


def _shutdown_at_exit(ref: weakref.ReferenceType[Executor]) -> None:
    executor = ref()
    if executor is not None:
        executor.shutdown(wait=True, timeout_s=2.0)
