"""What the worker's parts share: the tasks in flight (`Run`, `RunningTasks`) and the stop flags (`StopFlags`)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from nats.aio.msg import Msg

from workers.engine import executor as ex
from workers.engine.topology import TaskMessage

logger = logging.getLogger("neutrino.worker")


@dataclass
class Run:
    """A task this worker has claimed (or is claiming)."""

    task: TaskMessage
    attempt: int
    msgs: list[Msg]  # its deliveries; more than one when the broker redelivered it while it ran here
    started: float = field(default_factory=time.monotonic)
    child: str = ""  # the executor child's worker id, once it started
    cancel_requested: bool = False  # a user cancelled it
    stop_requested: bool = False  # the worker is stopping and killed it: hand it back, it did not fail
    last_progress: float = 0.0


class RunningTasks:
    """The runs of this worker by task id, and the way to kill one (through the executor).

    `lock` guards the `Run` fields that the executor's threads read (`child`, `cancel_requested`,
    `stop_requested`); the dict itself is touched from the event loop only.
    """

    def __init__(self, executor: ex.Executor) -> None:
        self.executor = executor
        self.lock = threading.Lock()
        self._by_id: dict[str, Run] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._by_id

    def __iter__(self) -> Iterator[Run]:
        return iter(list(self._by_id.values()))

    def get(self, task_id: str) -> Run | None:
        return self._by_id.get(task_id)

    def add(self, run: Run) -> None:
        self._by_id[run.task.task_id] = run

    def discard(self, task_id: str) -> None:
        self._by_id.pop(task_id, None)

    def ids(self) -> list[str]:
        return list(self._by_id)

    def cancel(self, task_id: str) -> None:
        """A user cancelled the task: kill its child if it runs here (the cancel service wrote the row)."""
        run = self._by_id.get(task_id)
        if run is None:
            return
        with self.lock:
            run.cancel_requested = True
        if self.executor.cancel(task_id):
            logger.info("cancel %s %s: killing its worker process", run.task.function, task_id)

    def stop_all(self) -> None:
        """The worker is stopping and the grace period is over: kill every run, to be handed back."""
        for run in self:
            with self.lock:
                run.stop_requested = True
            self.executor.cancel(run.task.task_id)

    def on_child_start(self, run: Run, child: str) -> None:
        """Called from the executor's thread once a child took the task."""
        with self.lock:
            run.child = child
            cancel = run.cancel_requested or run.stop_requested
        if cancel:  # a cancel that came while the task was being handed to a child
            self.executor.cancel(run.task.task_id)


class StopFlags:
    """`requested` is set by the first SIGTERM / SIGINT (no new tasks), `hurry` by the second (no grace period)."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.hurry = asyncio.Event()

    async def sleep(self, seconds: float) -> bool:
        """Sleep, or wake early when the worker stops. Returns True when it is stopping."""
        try:
            await asyncio.wait_for(self.requested.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True
