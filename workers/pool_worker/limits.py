"""[limits] The worker's side of concurrency and rate limits (the database side: tasks_app.services.limits).

A task whose limit is full waits without spending an attempt: JetStream counts every delivery towards
the consumer's max_deliver (a nak with a delay would count, and end a long wait in a dropped message),
so after its wait the task is published again as a new message at the end of the stream and the old
one is acked. The new message carries how many attempts the task has already spent
(`ATTEMPT_BASE_HEADER`), so its attempt numbers go on where they were. Going to the end of the stream
is also what keeps keys fair: a key with a hundred waiting tasks takes its turns among the others'
tasks instead of ahead of them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from neutrino.app import TaskSpec
from tasks_app.services import tasks as services
from tasks_app.services.limits import LimitWait, task_mark_running_limited
from workers.pool_worker.state import Run, StopFlags

logger = logging.getLogger("neutrino.worker")

ATTEMPT_BASE_HEADER = "Neutrino-Attempt-Base"
REPUBLISH_TIMEOUT_S = 5.0


def delivery_attempt(msg: Msg) -> int:
    """The attempt a delivery is: its delivery count, plus the attempts spent before a limit's wait."""
    base = (msg.headers or {}).get(ATTEMPT_BASE_HEADER, "")
    return int(msg.metadata.num_delivered) + (int(base) if base.isdigit() else 0)


def claim_for(spec: TaskSpec | None) -> Callable[..., Any]:
    """The claim of a task of `spec`: the plain one, or the limited one when the task has limits."""
    if spec is None or spec.limits is None:
        return services.task_mark_running
    return functools.partial(task_mark_running_limited, limits=spec.limits)


class LimitWaits:
    """The tasks of this worker that wait for a limit, each in its own asyncio task so that it holds no
    slot while it waits. At most `max_waiting` wait that way; past that a handler waits in place (holding
    its slot), which slows the fetching of more tasks that would only wait too."""

    def __init__(self, *, stop: StopFlags, ack_wait_s: float, max_waiting: int) -> None:
        self.stop = stop
        # Offered again well before the broker would redeliver the message on its own.
        self.longest_s = ack_wait_s / 3
        self.max_waiting = max_waiting
        self.waiting: set[asyncio.Task[None]] = set()

    async def wait(self, run: Run, wait: LimitWait) -> None:
        """Offer `run`'s task again after `wait` (in the background while there is room)."""
        if len(self.waiting) >= self.max_waiting:
            await self._wait_and_offer(run, wait)
            return
        waiter = asyncio.create_task(self._wait_and_offer(run, wait), name=f"limit-wait-{run.task.task_id}")
        self.waiting.add(waiter)
        waiter.add_done_callback(self.waiting.discard)

    async def _wait_and_offer(self, run: Run, wait: LimitWait) -> None:
        logger.debug("task %s waits %.2f s for its %s limit", run.task.task_id, wait.retry_in_s, wait.reason)
        await self.stop.sleep(min(wait.retry_in_s, self.longest_s))  # a stopping worker offers it at once
        await offer_again(run, wait)


async def offer_again(run: Run, wait: LimitWait) -> None:
    """Publish the task again as a new message at the end of the stream, then ack its deliveries."""
    first = run.msgs[0]
    headers = {"Nats-Msg-Id": f"{run.task.task_id}:wait:{uuid.uuid4().hex}",
               ATTEMPT_BASE_HEADER: str(run.attempt - 1)}  # nothing ran: the next delivery is this attempt again
    try:
        # The delivery's own connection: the worker's one, which the fetch handed to every message.
        await JetStreamContext(first._client).publish(first.subject, first.data, headers=headers,
                                                      timeout=REPUBLISH_TIMEOUT_S)
    except Exception as exc:
        # Not offered again: a nak brings this message back instead (it spends one delivery).
        logger.warning("task %s waiting for its %s limit was not published again (%s); nak", run.task.task_id,
                       wait.reason, exc)
        for msg in run.msgs:
            await _settle(msg, "nak")
        return
    for msg in run.msgs:
        await _settle(msg, "ack")


async def _settle(msg: Msg, how: str) -> None:
    """ack or nak; a failure only means the broker redelivers it, which the claim handles."""
    try:
        await (msg.ack() if how == "ack" else msg.nak())
    except Exception as exc:
        logger.warning("could not %s message %s (%s); it will be redelivered", how, msg.subject, exc)
