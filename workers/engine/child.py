"""The loop that runs inside each executor child process.

The parent (`workers.engine.executor.Executor`) starts a child with `child_main` as its target and talks
to it over one duplex `multiprocessing` Pipe. The protocol, one message per `send_bytes`:

parent -> child, pickled (the parent is trusted)
    (task_id, function, args, timeout_ms)  run one task
    None                                   exit cleanly (the child is being retired)

child -> parent, a JSON array (`send_reply` / `read_reply`): the child runs task code, which can write
anything on the pipe, so the parent never unpickles what comes from it
    ("ready", pid)                                            task modules loaded, start-up hooks run; sent once
    ("init_error", message)                                   task modules failed to load, or a start-up hook
                                                              (`@app.on_worker_start`) raised; the child exits
    ("progress", task_id, fraction, message)                  `neutrino.progress(...)` from the task
    ("ok", task_id, result_json, duration_ms)                 the function returned
    ("error", task_id, kind, exc_type, error, traceback, duration_ms)
        kind is "raised" (the function or the argument binding raised), "result" (the result is not
        JSON or too big) or "unknown" (no such function in the task modules)

Everything a task writes (print, sys.stderr, logging, `neutrino.log`, file descriptors 1 and 2) goes to
the log files the parent gave it (`workers.engine.logs`), not through the pipe.

The child first reduces its environment to an allow-list (`workers.engine.child_env`: no database URL,
secret key or NATS credentials), then loads the task modules once, runs the start-up hooks that apply to its pool once
(`@app.on_worker_start`: a model loaded there stays resident for every task the child runs), then
serves one task at a time until the parent sends None or closes its end of the pipe. It ignores
SIGINT (Ctrl-C belongs to the parent) and, on Linux, asks the kernel to SIGKILL it when its parent
dies. This module imports no Django.
"""

from __future__ import annotations

import asyncio
import ctypes
import inspect
import json
import os
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

import pydantic

from neutrino.app import TaskSpec, load_tasks, worker_start_hooks
from neutrino.client.context import set_current_task
from neutrino.progress import set_reporter
from workers.engine.child_env import scrub as scrub_environment
from workers.engine.logs.capture import Capture
from workers.engine.spool import spool_result

_MAX_TRACEBACK_CHARS = 32_000
_PR_SET_PDEATHSIG = 1

Reply = tuple[Any, ...]
# kind -> the types of the fields after it (the protocol above)
_REPLY_FIELDS: dict[str, tuple[type | tuple[type, ...], ...]] = {
    "ready": (int,),
    "init_error": (str,),
    "progress": (str, (int, float), str),
    "ok": (str, str, (int, float)),
    "error": (str, str, str, str, str, (int, float)),
}


class BadReply(ValueError):
    """What came from a child is not a reply of this protocol (task code wrote on the pipe)."""


def send_reply(conn: Connection, reply: Reply) -> None:
    """Send one reply to the parent as JSON."""
    conn.send_bytes(json.dumps(reply, separators=(",", ":")).encode())  # ASCII: a lone surrogate survives


def read_reply(conn: Connection) -> Reply:
    """Receive one reply from a child: JSON only, never unpickled. BadReply when it is not one."""
    data = conn.recv_bytes()
    try:
        reply = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise BadReply(f"not JSON ({type(exc).__name__}): {data[:80]!r}") from None
    fields = _REPLY_FIELDS.get(reply[0]) if isinstance(reply, list) and reply and isinstance(reply[0], str) else None
    if fields is None or len(reply) != len(fields) + 1 or not all(
        isinstance(value, kind) for value, kind in zip(reply[1:], fields, strict=True)
    ):
        raise BadReply(f"not a reply: {data[:80]!r}")
    return tuple(reply)


class StartHookFailed(Exception):
    """A start-up hook (`@app.on_worker_start`) raised; the child does not become ready."""

    def __init__(self, hook: str, pool: str, cause: BaseException) -> None:
        super().__init__(f"start-up hook {hook} (pool {pool or '-'}) raised {type(cause).__name__}: "
                         f"{_safe_str(cause)}")
        self.cause = cause


def child_main(conn: Connection, task_modules: tuple[str, ...], max_result_bytes: int, pool: str = "",
               log_files: tuple[str, str, int] | None = None, spool: Spool | None = None) -> None:
    """Entry point of a child process: load the task modules, run the pool's start-up hooks, capture what
    tasks write into `log_files` (buffer path, raw path, cap: `workers.engine.logs`), then serve tasks
    until told to stop."""
    scrub_environment()  # before any task code: the task modules are imported below
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    _release_fork_server()
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        # Task modules "importable from the current directory" must import here too, even when the
        # parent was started by a console script whose sys.path[0] is its bin directory.
        sys.path.append(cwd)
    try:
        tasks = load_tasks(task_modules)
        _run_start_hooks(pool)
        capture = None
        if log_files is not None:  # after the modules and hooks: what they print is not a task's
            capture = Capture(*log_files)
            capture.install()
    except BaseException as exc:  # an import error, any exception a module raised while importing, a hook
        try:
            send_reply(conn, ("init_error", _describe_init_error(exc, task_modules)))
        except OSError:
            pass
        return
    send_lock = threading.Lock()
    send_reply(conn, ("ready", os.getpid()))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):  # the parent went away
            return
        if job is None:
            return
        task_id, function, args, _timeout_ms = job
        if capture is not None:
            capture.begin_task()
        reply = _run_one(conn, send_lock, tasks, task_id, function, args, max_result_bytes, spool)
        if capture is not None:
            capture.end_task()  # before the reply: the parent's last read must find every line
        with send_lock:
            send_reply(conn, reply)


def _run_one(
    conn: Connection,
    send_lock: threading.Lock,
    tasks: dict[str, TaskSpec],
    task_id: str,
    function: str,
    args: Any,
    max_result_bytes: int,
    spool: Spool | None = None,
) -> Reply:
    spec = tasks.get(function)
    if spec is None:
        known = ", ".join(sorted(tasks)[:20]) or "none"
        return ("error", task_id, "unknown", "UnknownTask",
                f"no task named {function!r} in the worker's task modules (registered: {known})", "", 0.0)
    try:
        kwargs = spec.bind(args)
    except pydantic.ValidationError as exc:
        return ("error", task_id, "raised", "ValidationError", _safe_str(exc), "", 0.0)
    except Exception as exc:
        return ("error", task_id, "raised", type(exc).__name__, _safe_str(exc), _format_tb(exc), 0.0)

    def report(fraction: float, message: str) -> None:
        with send_lock:
            send_reply(conn, ("progress", task_id, fraction, message))

    set_reporter(report)
    set_current_task(task_id)  # what a submit from inside the task sends as its parent_id
    started = time.perf_counter()
    try:
        if spec.is_coroutine:
            result = asyncio.run(spec.fn(**kwargs))
        else:
            result = spec.fn(**kwargs)
            if inspect.iscoroutine(result):  # a plain function that returned a coroutine (a wrapper)
                result = asyncio.run(result)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt from a task must not end the child
        duration_ms = (time.perf_counter() - started) * 1000
        return ("error", task_id, "raised", type(exc).__name__, _safe_str(exc), _format_tb(exc), duration_ms)
    finally:
        set_reporter(None)
        set_current_task(None)
    duration_ms = (time.perf_counter() - started) * 1000
    try:
        # [objects] a large result, bytes or a neutrino.File go to a file; the pipe carries its path
        if spool is None:
            result_json = encode_result(result, max_result_bytes)
        else:
            result_json = spool_result(result, spool_dir=spool[0], inline_bytes=min(spool[1], max_result_bytes),
                                       max_object_bytes=spool[2], task_id=task_id, encode=encode_result)
    except (ValueError, OSError) as exc:
        return ("error", task_id, "result", "ResultError", f"result of task {task_id} {exc}", "", duration_ms)
    return ("ok", task_id, result_json, duration_ms)


# [objects] (spool directory, inline threshold, object limit): where large results go (workers.engine.objects)
Spool = tuple[str, int, int]


def spool_of(settings: Any) -> Spool | None:
    """The child's spool arguments from `ExecutorSettings` (None: no spool directory, results go inline)."""
    if not settings.spool_dir:
        return None
    return (settings.spool_dir, settings.inline_result_bytes, settings.max_object_bytes)


def encode_result(result: Any, max_result_bytes: int) -> str:
    """Encode a task's result as compact JSON; ValueError says why it cannot be sent back.

    Only JSON values (dict with str keys, list, tuple, str, int, float, bool, None) pass: a set, a
    datetime or a pydantic model is refused rather than converted behind the task's back (return
    `model.model_dump(mode="json")`). NaN and infinities are refused, as is a result over
    `max_result_bytes` bytes of UTF-8 JSON.
    """
    try:
        text = json.dumps(result, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:  # not a JSON type; NaN / infinity; circular reference
        raise ValueError(f"is not JSON-serialisable: {_safe_str(exc)}") from None
    except RecursionError:
        raise ValueError("is not JSON-serialisable: it is nested too deeply") from None
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate has no UTF-8 form: send the JSON escape that stands for it (`\ud800`), which
            # every JSON parser reads back as the same string.
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    size = len(text)
    if size <= max_result_bytes and size * 4 > max_result_bytes:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise ValueError(f"is not JSON-serialisable: {exc}") from None
    if size > max_result_bytes:
        raise ValueError(
            f"is too large: {size:,} bytes of JSON, over the limit of {max_result_bytes:,} bytes"
        )
    return text


def _run_start_hooks(pool: str) -> None:
    """`@app.on_worker_start` functions that apply to this pool, once, before the child says it is ready."""
    for hook in worker_start_hooks(pool):
        try:
            result = hook.fn()
            if inspect.iscoroutine(result):
                asyncio.run(result)
        except BaseException as exc:
            raise StartHookFailed(hook.name, pool, exc) from exc


def _describe_init_error(exc: BaseException, task_modules: tuple[str, ...]) -> str:
    if isinstance(exc, StartHookFailed):
        return f"{exc}\n{_format_tb(exc.cause)}"
    message = _safe_str(exc)
    if type(exc).__name__ == "TaskDefinitionError":
        return message
    modules = ", ".join(task_modules) or "(none)"
    return f"importing task modules {modules} raised {type(exc).__name__}: {message}\n{_format_tb(exc)}"


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__}: str() failed>"


def _format_tb(exc: BaseException) -> str:
    tb: TracebackType | None = exc.__traceback__
    # drop this module's own frames at the top, so the traceback starts in the task
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    try:
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    except Exception:
        text = f"{type(exc).__name__}: (traceback could not be formatted)\n"
    if len(text) > _MAX_TRACEBACK_CHARS:
        text = "...(truncated)...\n" + text[-_MAX_TRACEBACK_CHARS:]
    return text


def _release_fork_server() -> None:
    """Close this child's copy of the fork server's "parent alive" pipe (forkserver children only).

    Every child of the fork server inherits the write end of that pipe, and the fork server exits only
    when all write ends are closed. Were a child to keep it, a parent killed with SIGKILL would leave
    the fork server, and with it any child busy with a task, running on. Closed, the fork server exits
    with the parent and the kernel then kills this child (PR_SET_PDEATHSIG, below). The attribute is
    private to multiprocessing; a Python without it just keeps the old behaviour.
    """
    try:
        from multiprocessing import forkserver

        server = getattr(forkserver, "_forkserver", None)
        fd = getattr(server, "_forkserver_alive_fd", None)
        if isinstance(fd, int):
            os.close(fd)
            server._forkserver_alive_fd = None  # type: ignore[union-attr]
    except Exception:
        pass


def _die_with_parent() -> None:
    """Best effort, Linux only: have the kernel SIGKILL this process when its parent exits."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except Exception:
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
