"""What the worker's parts share: the tasks in flight (`Run`, `RunningTasks`) and the stop flags (`StopFlags`)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
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
    claimed: bool = False  # it holds a slot and its row says running here (not a message waiting for a slot)


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

    def claimed(self) -> int:
        """How many run here now (held messages that wait for a slot not counted)."""
        return sum(1 for run in self._by_id.values() if run.claimed)

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


class Slots:
    """The worker's child slots, and how many messages it may hold beyond them.

    A message claims its row only once it holds a slot, and gives the slot back as soon as its child is
    free, before its outcome is written: the next message's claim then goes into the same transaction as
    that write (`TransitionBatcher`), and the next fetch is not on the way of either.

    While recent tasks were short (their mean run under `PREFETCH_BELOW_S`), the worker also holds up to
    `concurrency` more messages, unclaimed and kept in progress, so a slot that frees finds its next task
    here instead of a fetch away. A pool of long tasks prefetches nothing: a held message would wait a
    whole run here while another worker could start it. Until a run has ended the worker does not know,
    so it starts without.
    """

    PREFETCH_BELOW_S = 0.25
    WEIGHT = 0.2  # of the latest run in the moving mean of run times

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.free = asyncio.Semaphore(concurrency)
        self.held = 0  # messages handed to a handler that have not given their slot back (or never took one)
        self.mean_run_s: float | None = None
        self.stopping = False

    def room(self) -> int:
        """How many more messages to fetch now."""
        short = self.mean_run_s is not None and self.mean_run_s < self.PREFETCH_BELOW_S
        return self.concurrency * (2 if short else 1) - self.held

    def ran(self, seconds: float) -> None:
        self.mean_run_s = seconds if self.mean_run_s is None else (
            self.WEIGHT * seconds + (1 - self.WEIGHT) * self.mean_run_s)

    def release_waiters(self) -> None:
        """The worker stops: wake every message waiting for a slot, so it is handed back unclaimed."""
        self.stopping = True
        for _ in range(self.concurrency * 2):
            self.free.release()


class SlotTicket:
    """One message's place: counted in `Slots.held` from its fetch until `release`, holding a slot between
    `take` and `release`. `release` may be called more than once."""

    __slots__ = ("on_release", "released", "slots", "taken")

    def __init__(self, slots: Slots, on_release: Callable[[], None]) -> None:
        self.slots = slots
        self.taken = False
        self.released = False
        self.on_release = on_release
        slots.held += 1

    async def take(self) -> bool:
        """Wait for a free slot. False: the worker is stopping (the message goes back unclaimed)."""
        if self.slots.stopping:
            return False
        await self.slots.free.acquire()
        if self.slots.stopping:
            self.slots.free.release()
            return False
        self.taken = True
        return True

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        if self.taken:
            self.slots.free.release()
        self.slots.held -= 1
        self.on_release()
