"""The pool's shared state: each child as the parent sees it, which children are idle, running or
leaving, and the jobs queued for the spawner thread.

Callers' threads and the spawner thread share one `Pool`; its mutable fields, and those of each
`Child`, are guarded by `Pool.lock`.
"""

from __future__ import annotations

import queue
import socket
import threading
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from workers.engine.executor.settings import ExecutorSettings
from workers.engine.logs.buffer import ChildLog, make_log_dir

HOSTNAME = socket.gethostname()


class Child:
    """One child process as the parent sees it. Mutable fields are guarded by `Pool.lock`."""

    __slots__ = ("conn", "join_lock", "kill_reason", "log", "pid", "process", "task_id", "tasks_done", "worker_id")

    def __init__(self, process: BaseProcess, conn: Connection, pid: int, log: ChildLog | None = None) -> None:
        self.process = process
        self.log = log  # what its tasks write (None: not captured); read by the run() thread that owns it
        self.conn = conn
        self.pid = pid
        self.worker_id = f"{HOSTNAME}:{pid}"
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

    def ask_to_exit(self) -> None:
        """Tell an idle child to exit cleanly; one whose pipe is gone already is past telling."""
        try:
            self.conn.send(None)
        except OSError:
            pass


@dataclass
class Job:
    """Work for the spawner thread."""

    kind: str  # "start" | "replace" | "stop"
    child: Child | None = None
    count: int = 0
    future: Future[None] | None = None
    timeout_s: float = 0.0


class Pool:
    """The children and their bookkeeping. Every field but `settings` and `jobs` is guarded by `lock`;
    `cond` (on the same lock) is notified when a child turns idle, a waiting call is cancelled, or
    the pool closes."""

    def __init__(self, settings: ExecutorSettings) -> None:
        self.settings = settings
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.idle: list[Child] = []  # a stack: the most recently used child is warmest
        self.members: set[Child] = set()  # children in the pool, idle or running
        self.dying: set[Child] = set()  # children out of the pool, not yet reaped
        self.running: dict[str, Child] = {}
        self.waiting: Counter[str] = Counter()  # task_id -> calls waiting for an idle child
        self.cancel_waiting: set[str] = set()
        self.closed = False
        self.last_start_error = ""  # why the spawner's last start of a replacement failed
        self.jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        # The children's log files live here only until each child opened them (then they are unlinked).
        self.log_dir = make_log_dir() if settings.log_max_bytes else ""

    def replace(self, child: Child) -> None:
        """Have the spawner thread reap `child` (out of the pool already) and start one in its place."""
        self.jobs.put(Job("replace", child=child))
