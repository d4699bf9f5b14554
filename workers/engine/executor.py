"""A pool of pre-started child processes that runs task functions with hard deadlines.

    executor = Executor(ExecutorSettings(task_modules=("myapp.tasks",), processes=4))
    result = executor.run(task_id="t-1", function="add", args={"a": 1, "b": 2}, timeout_ms=5_000)
    result.value        # 3
    executor.shutdown()

How it works. `start()` (or the first `run()`) starts `processes` children through a long-lived
spawner thread. Each child imports the task modules once (`neutrino.app.load_tasks`) and then waits
on its own duplex Pipe. `run()` takes an idle child, sends it `(task_id, function, args, timeout_ms)`,
and waits on the pipe with `poll(remaining)`. Progress reports from the task arrive on the same pipe
and are handed to `on_progress` in the calling thread. Children whose task was killed, that crashed,
or that ran `max_tasks_per_child` tasks are replaced in the background, so the caller is answered
at once and the pool heals itself.

Deadlines. `timeout_ms` bounds two separate waits:
  * waiting for an idle child: past `timeout_ms` the call raises `TaskTimeout` (stage "queue",
    message "no free worker process within ... ms"); nothing was started and nothing is killed;
  * the run itself, from the moment the task is handed to the child: the argument binding, the
    function and the JSON encoding of its result. Past `timeout_ms` the parent SIGKILLs the child
    and raises `TaskTimeout` (stage "run") within a few milliseconds of the deadline.
  So a call returns within about 2 x `timeout_ms`, and a task always gets its whole `timeout_ms` to
  run, however long it queued.

What the mechanism can do: a child process can be killed, whatever it is doing - a C extension
spinning without releasing the GIL, a deadlock, `time.sleep(3600)`. What it cannot do:
  * it kills only the child. Processes the task itself started (subprocess, multiprocessing) are not
    in the kill, unless they die with their parent on their own;
  * a killed task runs no `finally:` blocks, context managers or atexit handlers; files it was
    writing stay half-written. Locks held by the OS or a server on its behalf (file locks, database
    connections) are released when the process dies;
  * it sets no memory or CPU limit. Those are the operating system's job (container limits, cgroups,
    `ulimit`); a child the kernel's OOM killer ends is reported as `TaskCrashed` with SIGKILL;
  * a child serves many tasks in turn, so module-level state survives from one task to the next;
    `max_tasks_per_child` bounds how long (and how much a leak can grow);
  * it cannot tell a task that is about to finish from one that never will: the deadline is hard.

Threads and processes. An `Executor` is safe to use from many threads at once (gunicorn gthread
request threads, `asyncio.to_thread`). Every blocking wait has a timeout. It is not fork-safe: create
it in the process that uses it (after gunicorn forks its workers), never before a fork. Children are
started with "forkserver" (default: task modules this process has imported before `start()` are
preloaded in the fork server, so a new child costs a fork, not an import) or "spawn"; never plain
"fork", which is unsafe with threads and CUDA. The fork server is one per parent process and its
preload list is fixed when it first starts, so a second executor in the same process gets the first
one's preload (its children import their own modules, and see the preloaded tasks too: task names
must be unique across them). As with any "spawn"/"forkserver" child, each child runs the parent's
main script as `__mp_main__`, so that script needs its `if __name__ == "__main__":` guard.

Children ignore SIGINT (Ctrl-C belongs to the parent, which shuts them down). On Linux the kernel
kills them when their parent dies, even when the parent was killed with SIGKILL (PR_SET_PDEATHSIG;
under "forkserver" the fork server exits with the parent and takes its children along). Idle children
also exit when their pipe closes.

Data. Arguments travel pickled between these trusted processes; the result travels back as JSON text
(`json.dumps(..., allow_nan=False)`: a set, a datetime or a pydantic model is refused, not converted)
and a result over `max_result_bytes` bytes of UTF-8 fails with `ResultError`, never truncated.

Errors, all `ExecutorError` with `.task_id`, `.worker_id` (when a child was involved) and a message:

    ExecutorError
     +-- TaskTimeout      deadline passed (.timeout_ms, .stage "queue" or "run"); a running child was killed
     +-- TaskCrashed      the child died (.exitcode, .signal_name): segfault, os._exit, OOM kill
     +-- TaskCancelled    cancel(task_id) killed it, or cancelled it while it waited for a child
     +-- TaskRaised       the function raised (.exc_type, .error, .traceback); bad args: "ValidationError"
     +-- ResultError      the result is not JSON-serialisable or is over max_result_bytes
     +-- UnknownTask      no task of that name in the child's task modules
     +-- ExecutorClosed   shutdown() ran before or during the call

`start()` raises `neutrino.app.TaskDefinitionError` when a child cannot import the task modules.
"""

from __future__ import annotations

import atexit
import json
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import socket
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_connections
from multiprocessing.process import BaseProcess
from typing import Any

from neutrino.app import TaskDefinitionError
from workers.engine.child import child_main

__all__ = [
    "Executor",
    "ExecutorClosed",
    "ExecutorError",
    "ExecutorSettings",
    "ResultError",
    "RunResult",
    "TaskCancelled",
    "TaskCrashed",
    "TaskRaised",
    "TaskTimeout",
    "UnknownTask",
]

logger = logging.getLogger("neutrino.executor")

_START_TIMEOUT_S = 120.0  # a child must import the task modules within this (torch takes a while)
_RETIRE_GRACE_S = 2.0  # a retired child must exit within this after being told to, or it is killed
_EXIT_STATUS_WAIT_S = 1.0  # how long a crashed child's exit status may take to arrive
_MAX_RESTART_BACKOFF_S = 10.0
_HOSTNAME = socket.gethostname()


# --------------------------------------------------------------------------------------------------
# settings and results


@dataclass(frozen=True)
class ExecutorSettings:
    """How the pool runs. One object; durations carry their unit in the name."""

    task_modules: tuple[str, ...]  # imported in each child via neutrino.app.load_tasks
    processes: int = os.cpu_count() or 2  # children kept alive
    max_tasks_per_child: int = 1000  # recycle a child after N tasks (0 = never)
    max_result_bytes: int = 1_000_000  # a JSON-encoded result larger than this fails
    start_method: str = "forkserver"  # or "spawn"; never plain "fork" (threads + CUDA)
    pool: str = ""  # the pool the children serve: picks the start-up hooks (`@app.on_worker_start`) they run

    def __post_init__(self) -> None:
        if isinstance(self.task_modules, str) or not all(isinstance(m, str) for m in self.task_modules):
            raise ValueError(f"task_modules must be a sequence of module names, got {self.task_modules!r}")
        object.__setattr__(self, "task_modules", tuple(m.strip() for m in self.task_modules if m.strip()))
        for name in ("processes", "max_tasks_per_child", "max_result_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.processes < 1:
            raise ValueError(f"processes must be at least 1, got {self.processes}")
        if self.max_tasks_per_child < 0:
            raise ValueError(
                f"max_tasks_per_child must be 0 (never recycle) or more, got {self.max_tasks_per_child}"
            )
        if self.max_result_bytes < 1:
            raise ValueError(f"max_result_bytes must be positive, got {self.max_result_bytes}")
        if self.start_method not in ("forkserver", "spawn"):
            raise ValueError(
                f"start_method must be 'forkserver' or 'spawn', got {self.start_method!r} "
                "(plain 'fork' is unsafe in a threaded server and with CUDA)"
            )


@dataclass(frozen=True)
class RunResult:
    """What a successful `Executor.run` returns."""

    value: Any  # the result, as decoded from JSON (json.loads(result_json))
    result_json: str  # the JSON text the child produced
    duration_ms: float  # time spent in the function inside the child
    worker_id: str  # f"{hostname}:{child_pid}"


# --------------------------------------------------------------------------------------------------
# errors


class ExecutorError(Exception):
    """Base of the executor's errors: `.task_id`, `.worker_id` ("" when no child was involved), `.message`."""

    def __init__(self, message: str, *, task_id: str = "", worker_id: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.task_id = task_id
        self.worker_id = worker_id

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error, (type(self), self.message, dict(self.__dict__)))


def _rebuild_error(cls: type[ExecutorError], message: str, state: dict[str, Any]) -> ExecutorError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class TaskTimeout(ExecutorError):
    """The deadline passed. stage "run": the child was killed; stage "queue": no child was free in time."""

    def __init__(
        self, message: str, *, task_id: str, timeout_ms: int, stage: str = "run", worker_id: str = ""
    ) -> None:
        super().__init__(message, task_id=task_id, worker_id=worker_id)
        self.timeout_ms = timeout_ms
        self.stage = stage


class TaskCrashed(ExecutorError):
    """The child died while running the task (segfault, os._exit, OOM kill)."""

    def __init__(
        self,
        message: str,
        *,
        task_id: str,
        worker_id: str,
        exitcode: int | None,
        signal_name: str | None,
    ) -> None:
        super().__init__(message, task_id=task_id, worker_id=worker_id)
        self.exitcode = exitcode
        self.signal_name = signal_name


class TaskCancelled(ExecutorError):
    """`cancel(task_id)` killed the child running the task (or the task was cancelled while it waited)."""


class TaskRaised(ExecutorError):
    """The function raised, or its arguments did not validate (exc_type "ValidationError")."""

    def __init__(
        self,
        message: str,
        *,
        task_id: str,
        worker_id: str = "",
        exc_type: str,
        error: str,
        traceback: str,
    ) -> None:
        super().__init__(message, task_id=task_id, worker_id=worker_id)
        self.exc_type = exc_type
        self.error = error
        self.traceback = traceback


class ResultError(ExecutorError):
    """The result is not JSON-serialisable or is larger than `max_result_bytes`."""


class UnknownTask(ExecutorError):
    """No task of that name is registered in the child's task modules."""


class ExecutorClosed(ExecutorError):
    """`shutdown()` ran before or during the call."""


@dataclass(frozen=True)
class Failure:
    """An executor error as the task's record and its caller see it."""

    error_type: str  # the exception's type inside the child, or what went wrong around it
    message: str
    traceback: str = ""


def describe_failure(exc: ExecutorError, *, function: str, timeout_ms: int) -> Failure:
    """The one place that turns an executor error into an error type and message (sync and queued paths)."""
    if isinstance(exc, TaskRaised):
        return Failure(exc.exc_type, f"task {function} raised {exc.exc_type}: {exc.error}", exc.traceback)
    if isinstance(exc, TaskTimeout) and exc.stage == "queue":
        return Failure("TimeoutError", f"no worker process was free within {timeout_ms} ms to run task {function}; "
                       "the pool is saturated: try again or give it more processes")
    if isinstance(exc, TaskTimeout):
        return Failure("TimeoutError", f"task {function} timed out after {timeout_ms} ms and was killed")
    if isinstance(exc, TaskCancelled):
        return Failure("Cancelled", f"task {function} was cancelled while it ran")
    error_type = {
        TaskCrashed: "WorkerCrashed",
        ResultError: "ResultError",
        UnknownTask: "UnknownTask",
        ExecutorClosed: "ExecutorClosed",
    }.get(type(exc), type(exc).__name__)
    return Failure(error_type, str(exc))


# --------------------------------------------------------------------------------------------------
# the pool


class _Child:
    """One child process as the parent sees it. Mutable fields are guarded by Executor._lock."""

    __slots__ = ("conn", "join_lock", "kill_reason", "pid", "process", "task_id", "tasks_done", "worker_id")

    def __init__(self, process: BaseProcess, conn: Connection, pid: int) -> None:
        self.process = process
        self.conn = conn
        self.pid = pid
        self.worker_id = f"{_HOSTNAME}:{pid}"
        self.join_lock = threading.Lock()  # Process.join is not safe from two threads at once
        self.tasks_done = 0
        self.task_id: str | None = None  # set while a run() thread owns the child and its pipe
        self.kill_reason: str | None = None  # "timeout", "cancel", "closed", "crashed", "lost", "retire"

    def kill(self) -> None:
        try:
            self.process.kill()  # SIGKILL; a process already gone is ignored
        except ValueError:  # the Process object was closed: the child was reaped already
            pass

    def join(self, timeout_s: float) -> int | None:
        with self.join_lock:
            try:
                self.process.join(timeout_s)
                return self.process.exitcode
            except ValueError:  # already closed
                return None


@dataclass
class _Job:
    kind: str  # "start" | "replace" | "stop"
    child: _Child | None = None
    count: int = 0
    future: Future[None] | None = None
    timeout_s: float = 0.0


class Executor:
    """A pool of pre-started child processes that runs task functions with hard deadlines.

    See the module docstring for the mechanism, what it can and cannot do, and the errors.
    """

    def __init__(self, settings: ExecutorSettings) -> None:
        self.settings = settings
        self._ctx = multiprocessing.get_context(settings.start_method)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._start_lock = threading.Lock()
        self._idle: list[_Child] = []  # a stack: the most recently used child is warmest
        self._members: set[_Child] = set()  # children in the pool, idle or running
        self._dying: set[_Child] = set()  # children out of the pool, not yet reaped
        self._running: dict[str, _Child] = {}
        self._waiting: Counter[str] = Counter()
        self._cancel_waiting: set[str] = set()
        self._started = False
        self._closed = False
        self._closed_event = threading.Event()
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._spawner: threading.Thread | None = None
        self._last_start_error = ""
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
                self._ctx.set_forkserver_preload(["neutrino", "workers.engine.child", *imported])
            self._ensure_spawner()
            future: Future[None] = Future()
            self._jobs.put(_Job("start", count=self.settings.processes, future=future))
            try:
                future.result(timeout=_START_TIMEOUT_S + 10.0)
            except TimeoutError:
                raise ExecutorError(
                    f"the worker processes did not start within {_START_TIMEOUT_S:.0f} s"
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
    ) -> RunResult:
        """Run `function(**args)` in a child and return its result; block until it finishes.

        Waits at most `timeout_ms` for a free child, then gives the task `timeout_ms` to run (see the
        module docstring). `on_start(worker_id)` is called once the task was handed to a child, and
        `on_progress(fraction, message)` for each `neutrino.progress(...)` report, both in this
        thread; an exception they raise is logged and does not affect the task.
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
                child.conn.send_bytes(payload)
                break
            except OSError:  # the child died while idle: replace it and take another
                self._drop(child, "lost")
            except BaseException:
                self._drop(child, "lost", only_if_task=task_id)
                raise
        try:
            deadline = time.monotonic() + timeout_ms / 1000
            if on_start is not None:
                self._call_back(on_start, child.worker_id)
            return self._await_reply(child, task_id, function, timeout_ms, deadline, on_progress)
        except ExecutorError:
            raise
        except BaseException:
            # Something outside the protocol (KeyboardInterrupt in the main thread, a bug): the child
            # may still be running the task, so it cannot go back to the pool.
            self._drop(child, "lost", only_if_task=task_id)
            raise

    def cancel(self, task_id: str) -> bool:
        """Kill the child running `task_id`; its `run()` raises `TaskCancelled`.

        A call still waiting for a free child is cancelled too. Returns False when the task is not
        running or waiting here (finished already, never seen, or running on another machine).
        """
        with self._lock:
            child = self._running.get(task_id)
            if child is not None:
                if child.kill_reason is None:
                    child.kill_reason = "cancel"
                    child.kill()
                return True
            if self._waiting[task_id]:
                self._cancel_waiting.add(task_id)
                self._cond.notify_all()
                return True
            return False

    def running(self) -> dict[str, str]:
        """task_id -> worker_id of every task running now."""
        with self._lock:
            return {task_id: child.worker_id for task_id, child in self._running.items()}

    def child_pids(self) -> list[int]:
        """The pids of the children in the pool (idle or running)."""
        with self._lock:
            return sorted(child.pid for child in self._members)

    def shutdown(self, *, wait: bool = True, timeout_s: float = 5.0) -> None:
        """Stop the children: idle ones exit cleanly, running ones are killed (their calls get
        `ExecutorClosed`). With `wait`, block until all are gone, at most about `timeout_s`."""
        with self._cond:
            first = not self._closed
            self._closed = True
            self._closed_event.set()
            idle: list[_Child] = []
            if first:
                idle, self._idle = self._idle, []
                for child in idle:
                    child.kill_reason = "retire"
                for child in self._running.values():
                    if child.kill_reason is None:
                        child.kill_reason = "closed"
                        child.kill()
                self._cond.notify_all()
        if first:
            for child in idle:
                try:
                    child.conn.send(None)
                except OSError:
                    pass
            self._jobs.put(_Job("stop", timeout_s=timeout_s))
        spawner = self._spawner
        if wait and spawner is not None and spawner is not threading.current_thread():
            spawner.join(timeout_s + 2.0)

    # ---- run() internals --------------------------------------------------------------------------

    def _check_usable(self, task_id: str) -> None:
        if self._closed:
            raise ExecutorClosed("the executor was shut down", task_id=task_id)
        if os.getpid() != self._owner_pid:
            raise ExecutorError(
                f"this executor belongs to process {self._owner_pid} and cannot be used in process "
                f"{os.getpid()} (a fork of it); create the executor after forking",
                task_id=task_id,
            )

    def _acquire(self, task_id: str, function: str, timeout_ms: int, deadline: float) -> _Child:
        with self._cond:
            if task_id in self._running:
                raise ExecutorError(f"task {task_id} is already running in this executor", task_id=task_id)
            self._waiting[task_id] += 1
            try:
                while True:
                    if self._closed:
                        raise ExecutorClosed(
                            f"the executor was shut down before task {task_id} ({function}) started",
                            task_id=task_id,
                        )
                    if task_id in self._cancel_waiting:
                        self._cancel_waiting.discard(task_id)
                        raise TaskCancelled(
                            f"task {task_id} ({function}) was cancelled while it waited for a worker process",
                            task_id=task_id,
                        )
                    if self._idle:
                        child = self._idle.pop()
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        hint = f"; the last worker start failed: {self._last_start_error}" if (
                            self._last_start_error and len(self._members) < self.settings.processes
                        ) else ""
                        raise TaskTimeout(
                            f"no free worker process within {timeout_ms} ms for task {task_id} ({function}): "
                            f"all {len(self._members)} are busy{hint}",
                            task_id=task_id,
                            timeout_ms=timeout_ms,
                            stage="queue",
                        )
                    self._cond.wait(remaining)
            finally:
                self._waiting[task_id] -= 1
                if not self._waiting[task_id]:
                    del self._waiting[task_id]
            child.task_id = task_id
            self._running[task_id] = child
            return child

    def _await_reply(
        self,
        child: _Child,
        task_id: str,
        function: str,
        timeout_ms: int,
        deadline: float,
        on_progress: Callable[[float, str], None] | None,
    ) -> RunResult:
        conn = child.conn
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._deadline_passed(child, task_id, function, timeout_ms)
            try:
                if not conn.poll(remaining):
                    continue  # the deadline is checked above, so a poll that wakes early is harmless
                message = conn.recv()
            except (EOFError, OSError):
                raise self._child_lost(child, task_id, function) from None
            kind = message[0]
            if message[1] != task_id:
                continue  # a late progress report from a thread an earlier task left behind
            if kind == "progress":
                if on_progress is not None:
                    self._call_back(on_progress, message[2], message[3])
                continue
            self._release(child, task_id, function)
            if kind == "ok":
                return RunResult(
                    value=json.loads(message[2]),
                    result_json=message[2],
                    duration_ms=message[3],
                    worker_id=child.worker_id,
                )
            raise self._error_from_reply(message, task_id, function, child.worker_id)

    def _error_from_reply(
        self, message: tuple[Any, ...], task_id: str, function: str, worker_id: str
    ) -> ExecutorError:
        _, _, kind, exc_type, error, tb, _duration_ms = message
        if kind == "unknown":
            return UnknownTask(error, task_id=task_id, worker_id=worker_id)
        if kind == "result":
            return ResultError(error, task_id=task_id, worker_id=worker_id)
        what = "had invalid arguments" if exc_type == "ValidationError" else f"raised {exc_type}"
        return TaskRaised(
            f"task {task_id} ({function}) {what}: {error}",
            task_id=task_id,
            worker_id=worker_id,
            exc_type=exc_type,
            error=error,
            traceback=tb,
        )

    def _release(self, child: _Child, task_id: str, function: str) -> None:
        """The child answered: put it back in the pool, or retire it; raise if it was killed meanwhile."""
        retire = False
        with self._cond:
            if self._running.get(task_id) is child:
                del self._running[task_id]
            child.task_id = None
            reason = child.kill_reason
            if reason is None:
                child.tasks_done += 1
                limit = self.settings.max_tasks_per_child
                if limit and child.tasks_done >= limit:
                    retire = True
                    child.kill_reason = "retire"
                    self._members.discard(child)
                    self._dying.add(child)
                else:
                    self._idle.append(child)
                    self._cond.notify()
                    return
            else:
                self._members.discard(child)
                self._dying.add(child)
        if retire:
            try:
                child.conn.send(None)
            except OSError:
                pass
            self._jobs.put(_Job("replace", child=child))
            return
        self._jobs.put(_Job("replace", child=child))
        raise self._killed_error(reason, child, task_id, function)

    def _killed_error(self, reason: str | None, child: _Child, task_id: str, function: str) -> ExecutorError:
        if reason == "cancel":
            return TaskCancelled(
                f"task {task_id} ({function}) was cancelled; worker process {child.pid} was killed",
                task_id=task_id,
                worker_id=child.worker_id,
            )
        return ExecutorClosed(
            f"the executor was shut down while task {task_id} ({function}) ran; "
            f"worker process {child.pid} was killed",
            task_id=task_id,
            worker_id=child.worker_id,
        )

    def _deadline_passed(self, child: _Child, task_id: str, function: str, timeout_ms: int) -> ExecutorError:
        with self._lock:
            reason = child.kill_reason
            if reason is None:
                child.kill_reason = "timeout"
                child.kill()
            self._forget(child, task_id)
        self._jobs.put(_Job("replace", child=child))
        if reason is not None:
            return self._killed_error(reason, child, task_id, function)
        return TaskTimeout(
            f"task {task_id} ({function}) ran past its {timeout_ms} ms deadline; "
            f"worker process {child.pid} was killed",
            task_id=task_id,
            timeout_ms=timeout_ms,
            worker_id=child.worker_id,
        )

    def _child_lost(self, child: _Child, task_id: str, function: str) -> ExecutorError:
        with self._lock:
            reason = child.kill_reason
            if reason is None:
                child.kill_reason = "crashed"
            self._forget(child, task_id)
        if reason is not None:
            self._jobs.put(_Job("replace", child=child))
            return self._killed_error(reason, child, task_id, function)
        exitcode = child.join(_EXIT_STATUS_WAIT_S)
        if exitcode is None:  # it closed its pipe but lives on: it is of no use any more
            child.kill()
        self._jobs.put(_Job("replace", child=child))
        signal_name = _signal_name(exitcode)
        return TaskCrashed(
            f"worker process {child.pid} {_describe_exit(exitcode)} "
            f"while running task {task_id} ({function})",
            task_id=task_id,
            worker_id=child.worker_id,
            exitcode=exitcode,
            signal_name=signal_name,
        )

    def _forget(self, child: _Child, task_id: str) -> None:
        """Take a child out of the pool; the caller holds the lock."""
        if self._running.get(task_id) is child:
            del self._running[task_id]
        child.task_id = None
        self._members.discard(child)
        self._dying.add(child)

    def _drop(self, child: _Child, reason: str, *, only_if_task: str | None = None) -> None:
        """Kill a child that cannot be used any more and have it replaced."""
        with self._lock:
            if only_if_task is not None and child.task_id != only_if_task:
                return
            if child.kill_reason is None:
                child.kill_reason = reason
            child.kill()
            self._forget(child, child.task_id or "")
        self._jobs.put(_Job("replace", child=child))

    @staticmethod
    def _call_back(callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            logger.exception("executor callback %r raised; the task goes on", callback)

    # ---- the spawner thread: starts, replaces and reaps children ----------------------------------

    def _ensure_spawner(self) -> None:
        if self._spawner is None:
            # All children are started from this one long-lived thread: on Linux the kernel's
            # "kill me when my parent dies" is tied to the thread that created the child.
            self._spawner = threading.Thread(
                target=self._spawner_loop, name="neutrino-executor-spawner", daemon=True
            )
            self._spawner.start()

    def _spawner_loop(self) -> None:
        missing = 0  # children lost and not replaced yet
        backoff_s = 0.0  # after a failed start, wait this long before the next try
        while True:
            jobs: list[_Job] = []
            try:
                jobs.append(self._jobs.get(timeout=backoff_s if missing else None))
            except queue.Empty:  # the backoff passed: try the missing children again
                pass
            while True:
                try:
                    jobs.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            starts = [job for job in jobs if job.kind == "start" and job.future is not None]
            try:
                olds = [job.child for job in jobs if job.kind == "replace" and job.child is not None]
                for old in olds:
                    if old.kill_reason != "retire":
                        self._reap(old, _EXIT_STATUS_WAIT_S)
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
                if missing and not self._closed:
                    children, errors = self._start_children(missing)
                    self._add_to_pool(children)
                    missing -= len(children)
                    if errors:
                        self._last_start_error = errors[0]
                        backoff_s = min(_MAX_RESTART_BACKOFF_S, max(0.5, backoff_s * 2))
                        logger.error(
                            "cannot start a replacement worker process (retrying in %.1f s): %s",
                            backoff_s,
                            errors[0],
                        )
                    else:
                        backoff_s = 0.0
                for old in olds:
                    if old.kill_reason == "retire":
                        self._reap(old, _RETIRE_GRACE_S)
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
                try:
                    child.conn.send(None)
                except OSError:
                    pass
            for child in children:
                self._reap(child, _RETIRE_GRACE_S)
            if self._closed:
                future.set_exception(ExecutorClosed("the executor was shut down while it started"))
            elif errors[0].startswith("cannot start a worker process"):
                future.set_exception(ExecutorError(errors[0]))
            else:
                future.set_exception(TaskDefinitionError(errors[0]))
            return
        self._add_to_pool(children)
        future.set_result(None)

    def _start_children(self, count: int) -> tuple[list[_Child], list[str]]:
        """Start `count` children and wait until each has loaded the task modules or failed to."""
        errors: list[str] = []
        pending: dict[Connection, BaseProcess] = {}
        for _ in range(count):
            if self._closed:
                break
            parent_end, child_end = self._ctx.Pipe(duplex=True)
            try:
                process = self._ctx.Process(  # type: ignore[attr-defined]
                    target=child_main,
                    args=(child_end, self.settings.task_modules, self.settings.max_result_bytes,
                          self.settings.pool),
                    name="neutrino-executor-child",
                    daemon=False,  # a daemonic process may not start processes; tasks may want to
                )
                process.start()
            except Exception as exc:
                parent_end.close()
                errors.append(f"cannot start a worker process: {type(exc).__name__}: {exc}")
                continue
            finally:
                child_end.close()  # the parent keeps one end only, so a dead child reads as EOF
            pending[parent_end] = process
        children: list[_Child] = []
        deadline = time.monotonic() + _START_TIMEOUT_S
        while pending:
            remaining = deadline - time.monotonic()
            if self._closed or remaining <= 0:
                if not self._closed:
                    errors.append(
                        f"worker processes did not import the task modules and run their start-up hooks "
                        f"within {_START_TIMEOUT_S:.0f} s"
                    )
                for conn, process in pending.items():
                    process.kill()
                    process.join(_EXIT_STATUS_WAIT_S)
                    conn.close()
                break
            for ready in wait_for_connections(list(pending), timeout=min(remaining, 0.25)):
                assert isinstance(ready, Connection)
                process = pending.pop(ready)
                try:
                    message = ready.recv()
                except (EOFError, OSError):
                    process.join(_EXIT_STATUS_WAIT_S)
                    errors.append(
                        f"worker process {process.pid} {_describe_exit(process.exitcode)} "
                        f"while importing the task modules {', '.join(self.settings.task_modules)}"
                    )
                    ready.close()
                    continue
                if message[0] == "ready":
                    children.append(_Child(process, ready, int(message[1])))
                else:
                    errors.append(str(message[1]))
                    process.join(_RETIRE_GRACE_S)
                    process.kill()
                    process.join(_EXIT_STATUS_WAIT_S)
                    ready.close()
        return children, errors

    def _add_to_pool(self, children: list[_Child]) -> None:
        if not children:
            return
        with self._cond:
            if not self._closed:
                self._members.update(children)
                self._idle.extend(children)
                self._cond.notify(len(children))
                return
            self._dying.update(children)
        for child in children:  # shut down while they started
            child.kill_reason = "retire"
            try:
                child.conn.send(None)
            except OSError:
                pass

    def _reap(self, child: _Child, timeout_s: float) -> None:
        """Wait for a child that is leaving to exit (kill it past `timeout_s`) and free its resources."""
        exitcode = child.join(timeout_s)
        if exitcode is None:
            child.kill()
            exitcode = child.join(_EXIT_STATUS_WAIT_S)
        with self._lock:
            self._dying.discard(child)
            owned = child.task_id is not None
        if exitcode is not None:
            try:
                child.process.close()
            except ValueError:
                pass
        if not owned:  # a run() thread still reading from it closes nothing; the GC closes it later
            child.conn.close()

    def _stop_all(self, timeout_s: float) -> None:
        with self._lock:
            children = list(self._members | self._dying)
            self._members.clear()
            self._idle.clear()
        deadline = time.monotonic() + max(0.0, timeout_s)
        for child in children:
            child.join(max(0.0, deadline - time.monotonic()))
        for child in children:
            self._reap(child, 0.0)


def _shutdown_at_exit(ref: weakref.ReferenceType[Executor]) -> None:
    executor = ref()
    if executor is not None:
        executor.shutdown(wait=True, timeout_s=2.0)


def _signal_name(exitcode: int | None) -> str | None:
    if exitcode is None or exitcode >= 0:
        return None
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "stopped answering (its pipe closed but it did not exit)"
    if exitcode >= 0:
        return f"exited with code {exitcode}"
    name = _signal_name(exitcode)
    if exitcode == -signal.SIGKILL:
        return f"was killed with {name} (the kernel's out-of-memory killer sends it too)"
    return f"died with {name}"
