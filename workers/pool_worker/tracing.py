"""The pool worker's spans of one delivery (workers.engine.tracing): the queue wait, then the attempt with
its claim, run and completion under it, all continuing the trace of the publish that queued the task.

The run span is the worker's, around its executor call: the child process exports nothing of its own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from nats.aio.msg import Msg

from workers.engine import tracing
from workers.engine.topology import TaskMessage


@contextmanager
def attempt_span(msg: Msg, task: TaskMessage, *, attempt: int, pool: str) -> Iterator[Any]:
    """The span of one delivery, from fetch to settlement; a `neutrino.queue_wait` span before it covers
    the time from the message's JetStream timestamp (its first publish) to this fetch."""
    if not tracing.enabled():
        yield None
        return
    parent = task.traceparent or None
    attributes = {"neutrino.task_id": task.task_id, "neutrino.pool": pool, "neutrino.attempt": attempt}
    try:
        stored_ns = int(msg.metadata.timestamp.timestamp() * 1e9)
    except Exception:  # not a JetStream message (no reply subject): no wait to show
        stored_ns = None
    if stored_ns is not None:
        with tracing.span("neutrino.queue_wait", parent=parent, attributes=attributes, start_time_ns=stored_ns):
            pass
    with tracing.span("neutrino.attempt", kind="consumer", parent=parent,
                      attributes={**attributes, "messaging.system": "nats", "messaging.destination.name": msg.subject}
                      ) as span:
        yield span


def run_attributes(task: TaskMessage, *, attempt: int, pool: str) -> dict[str, Any]:
    return {"neutrino.task_id": task.task_id, "neutrino.function": task.function, "neutrino.pool": pool,
            "neutrino.attempt": attempt}
