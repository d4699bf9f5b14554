"""Starting children: the one spawner thread that starts the pool, replaces the children that left
it, reaps them, and stops them all at shutdown.

All children are started from this one long-lived thread: on Linux the kernel's "kill me when my
parent dies" (PR_SET_PDEATHSIG, which the child asks for) is tied to the thread that created the
child, so a short-lived thread would take its children with it.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from concurrent.futures import Future
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_connections
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess

from neutrino.app import TaskDefinitionError
from workers.engine.child import BadReply, child_main, read_reply, spool_of
from workers.engine.executor.errors import ExecutorClosed, ExecutorError, describe_exit
from workers.engine.executor.pool import Child, Job, Pool
from workers.engine.executor.settings import (
    EXIT_STATUS_WAIT_S,
    MAX_RESTART_BACKOFF_S,
    RETIRE_GRACE_S,
    START_TIMEOUT_S,
)
from workers.engine.logs.buffer import ChildLog

logger = logging.getLogger("neutrino.executor")


class Spawner:
    """Owns the spawner thread; it takes `Job`s from `pool.jobs` until a "stop" job."""

    def __init__(self, pool: Pool, ctx: BaseContext) -> None:
        self._pool = pool
        self._ctx = ctx
        self._thread: threading.Thread | None = None

    def ensure_started(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="neutrino-executor-spawner", daemon=True)
            self._thread.start()

    def join(self, timeout_s: float) -> None:
        """Wait for the thread to end after a "stop" job (it cannot wait for itself)."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def _loop(self) -> None:
        pool = self._pool
        missing = 0  # children lost and not replaced yet
        backoff_s = 0.0  # after a failed start, wait this long before the next try
        while True:
            jobs: list[Job] = []
            try:
                jobs.append(pool.jobs.get(timeout=backoff_s if missing else None))
            except queue.Empty:  # the backoff passed: try the missing children again
                pass
            while True:
                try:
                    jobs.append(pool.jobs.get_nowait())
                except queue.Empty:
                    break
            starts = [job for job in jobs if job.kind == "start" and job.future is not None]
            try:
                olds = [job.child for job in jobs if job.kind == "replace" and job.child is not None]
                for old in olds:
                    if old.kill_reason != "retire":
                        self._reap(old, EXIT_STATUS_WAIT_S)
                stop = next((job for job in jobs if job.kind == "stop"), None)
                if stop is not None:
                    for job in starts:
                        assert job.future is not None
                        job.future.set_exception(ExecutorClosed("the executor was shut down as it started"))
                    self._stop_all(stop.timeout_s)
                    return
                for job in starts:
                    assert job.future is not None
                    self._initial_start(job.count, job.future)
                missing += len(olds)
                if missing and not pool.closed:
                    children, errors = self._start_children(missing)
                    self._add_to_pool(children)
                    missing -= len(children)
                    if errors:
                        pool.last_start_error = errors[0]
                        backoff_s = min(MAX_RESTART_BACKOFF_S, max(0.5, backoff_s * 2))
                        logger.error(
                            "cannot start a replacement worker process (retrying in %.1f s): %s",
                            backoff_s,
                            errors[0],
                        )
                    else:
                        backoff_s = 0.0
                for old in olds:
                    if old.kill_reason == "retire":
                        self._reap(old, RETIRE_GRACE_S)
            except Exception as exc:  # a bug here must not leave the pool unable to heal
                logger.exception("the executor's spawner thread hit an unexpected error; it goes on")
                for job in starts:
                    assert job.future is not None
                    if not job.future.done():
                        job.future.set_exception(ExecutorError(f"the worker processes did not start: {exc}"))
                backoff_s = max(backoff_s, 1.0)

    def _initial_start(self, count: int, future: Future[None]) -> None:
        children, errors = self._start_children(count)
        if errors:
            for child in children:
                child.kill_reason = "retire"
                child.ask_to_exit()
            for child in children:
                self._reap(child, RETIRE_GRACE_S)
            if self._pool.closed:
                future.set_exception(ExecutorClosed("the executor was shut down while it started"))
            elif errors[0].startswith("cannot start a worker process"):
                future.set_exception(ExecutorError(errors[0]))
            else:
                future.set_exception(TaskDefinitionError(errors[0]))
            return
        self._add_to_pool(children)
        future.set_result(None)

    def _start_children(self, count: int) -> tuple[list[Child], list[str]]:
        """Start `count` children and wait until each has loaded the task modules or failed to."""
        settings = self._pool.settings
        errors: list[str] = []
        pending: dict[Connection, BaseProcess] = {}
        logs: dict[Connection, ChildLog | None] = {}
        for _ in range(count):
            if self._pool.closed:
                break
            parent_end, child_end = self._ctx.Pipe(duplex=True)
            log = ChildLog(self._pool.log_dir, settings.log_max_bytes) if self._pool.log_dir else None
            log_files = None if log is None else (log.buffer_path, log.raw_path, settings.log_max_bytes)
            try:
                process = self._ctx.Process(  # type: ignore[attr-defined]
                    target=child_main,
                    args=(child_end, settings.task_modules, settings.max_result_bytes, settings.pool, log_files,
                          spool_of(settings)),
                    name="neutrino-executor-child",
                    daemon=False,  # a daemonic process may not start processes; tasks may want to
                )
                process.start()
            except Exception as exc:
                parent_end.close()
                if log is not None:
                    log.unlink()
                errors.append(f"cannot start a worker process: {type(exc).__name__}: {exc}")
                continue
            finally:
                child_end.close()  # the parent keeps one end only, so a dead child reads as EOF
            pending[parent_end] = process
            logs[parent_end] = log
        children: list[Child] = []
        deadline = time.monotonic() + START_TIMEOUT_S
        while pending:
            remaining = deadline - time.monotonic()
            if self._pool.closed or remaining <= 0:
                if not self._pool.closed:
                    errors.append(
                        f"worker processes did not import the task modules and run their start-up hooks "
                        f"within {START_TIMEOUT_S:.0f} s"
                    )
                for conn, process in pending.items():
                    _unlink(logs.pop(conn, None))
                    process.kill()
                    process.join(EXIT_STATUS_WAIT_S)
                    conn.close()
                break
            for ready in wait_for_connections(list(pending), timeout=min(remaining, 0.25)):
                assert isinstance(ready, Connection)
                process = pending.pop(ready)
                log = logs.pop(ready, None)
                _unlink(log)  # opened by now, or never to be
                try:
                    message = read_reply(ready)
                except BadReply as exc:  # module code wrote on the pipe while importing
                    errors.append(f"worker process {process.pid} sent something that is not a reply while "
                                  f"importing the task modules: {exc}")
                    process.kill()
                    process.join(EXIT_STATUS_WAIT_S)
                    ready.close()
                    continue
                except (EOFError, OSError):
                    process.join(EXIT_STATUS_WAIT_S)
                    errors.append(
                        f"worker process {process.pid} {describe_exit(process.exitcode)} "
                        f"while importing the task modules {', '.join(settings.task_modules)}"
                    )
                    ready.close()
                    continue
                if message[0] == "ready":
                    children.append(Child(process, ready, int(message[1]), log))
                else:
                    errors.append(str(message[1]))
                    process.join(RETIRE_GRACE_S)
                    process.kill()
                    process.join(EXIT_STATUS_WAIT_S)
                    ready.close()
        return children, errors

    def _add_to_pool(self, children: list[Child]) -> None:
        if not children:
            return
        pool = self._pool
        with pool.cond:
            if not pool.closed:
                pool.members.update(children)
                pool.idle.extend(children)
                pool.cond.notify(len(children))
                return
            pool.dying.update(children)
        for child in children:  # shut down while they started
            child.kill_reason = "retire"
            child.ask_to_exit()

    def _reap(self, child: Child, timeout_s: float) -> None:
        """Wait for a child that is leaving to exit (kill it past `timeout_s`) and free its resources."""
        exitcode = child.join(timeout_s)
        if exitcode is None:
            child.kill()
            exitcode = child.join(EXIT_STATUS_WAIT_S)
        with self._pool.lock:
            self._pool.dying.discard(child)
            owned = child.task_id is not None
        if exitcode is not None:
            try:
                child.process.close()
            except ValueError:
                pass
        if not owned:  # a run() thread still reading from it closes nothing; the GC closes it later
            child.conn.close()

    def _stop_all(self, timeout_s: float) -> None:
        pool = self._pool
        with pool.lock:
            children = list(pool.members | pool.dying)
            pool.members.clear()
            pool.idle.clear()
        deadline = time.monotonic() + max(0.0, timeout_s)
        for child in children:
            child.join(max(0.0, deadline - time.monotonic()))
        for child in children:
            self._reap(child, 0.0)
        if pool.log_dir:
            shutil.rmtree(pool.log_dir, ignore_errors=True)


def _unlink(log: ChildLog | None) -> None:
    if log is not None:
        log.unlink()
