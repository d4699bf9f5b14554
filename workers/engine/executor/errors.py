"""What a failed call raises, and the words for it.

The error classes (the tree is drawn in the package docstring), the one place that turns them into
an error type and message for a task's record (`describe_failure`), the error a child's reply stands
for, and how a dead child's exit status reads.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any


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


def error_from_reply(message: tuple[Any, ...], task_id: str, function: str, worker_id: str) -> ExecutorError:
    """The error a child's ("error", ...) reply stands for (the protocol is in `workers.engine.child`)."""
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


def signal_name(exitcode: int | None) -> str | None:
    """The signal that ended a child, from its exit code (None when it exited on its own or lives)."""
    if exitcode is None or exitcode >= 0:
        return None
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


def describe_exit(exitcode: int | None) -> str:
    """How a child's end reads in a message: "exited with code 1", "was killed with SIGKILL (...)"."""
    if exitcode is None:
        return "stopped answering (its pipe closed but it did not exit)"
    if exitcode >= 0:
        return f"exited with code {exitcode}"
    name = signal_name(exitcode)
    if exitcode == -signal.SIGKILL:
        return f"was killed with {name} (the kernel's out-of-memory killer sends it too)"
    return f"died with {name}"
