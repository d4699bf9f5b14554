"""Database calls from the event loop: each runs in a thread (`db`), and the row transitions of tasks
handled at the same time share one thread hop and one transaction (`TransitionBatcher`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction

T = TypeVar("T")


def db_call(fn: Callable[..., T], kwargs: dict[str, Any]) -> T:
    """Call `fn(**kwargs)` in this thread; a dropped connection (database restart) is reopened once."""
    try:
        return fn(**kwargs)
    except (InterfaceError, OperationalError):
        connection.close()
        return fn(**kwargs)


async def db(fn: Callable[..., T], /, **kwargs: Any) -> T:
    """`fn(**kwargs)` in a thread of the loop's default pool (see `db_call`)."""
    return await asyncio.to_thread(db_call, fn, kwargs)


class TransitionBatcher:
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
            # One turn of the loop first: a handler whose child just came free writes its outcome in the
            # same turn as the next message claims that child, and both should share this transaction.
            await asyncio.sleep(0)
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
            outcomes.append((True, db_call(fn, kwargs)))
        except DatabaseError as exc:
            outcomes.append((False, exc))
    return outcomes
