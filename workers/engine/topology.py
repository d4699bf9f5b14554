"""The JetStream topology: one WorkQueue stream for all NATS pools, one durable pull consumer per pool.

    stream   NEUTRINO_TASKS      subjects neutrino.<pool>.*, neutrino.<pool>.*.high, neutrino.<pool>.*.low
                                 (WorkQueue, file storage, duplicate window)
    consumer pool_<pool>         filter neutrino.<pool>.*         normal priority (explicit ack, ack_wait,
    consumer prio_high_<pool>    filter neutrino.<pool>.*.high    high            max_deliver; one set of
    consumer prio_low_<pool>     filter neutrino.<pool>.*.low     low             settings for the three)
    events   neutrino.events.task.<id>      core NATS, every state change (JSON); subscribe to
                                            neutrino.events.task.* for all, or one task's subject
    control  neutrino.control.cancel        core NATS, "kill this task if you run it"

Imports no Django: the gateway and the workers share it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from neutrino.app import PRIORITIES

STREAM = "NEUTRINO_TASKS"
EVENTS_SUBJECT = "neutrino.events.task.*"  # every task's events (a subscription, not a publish subject)
CANCEL_SUBJECT = "neutrino.control.cancel"
RESERVED_POOL_NAMES = frozenset({"events", "control"})
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + STREAM + ".*"


@dataclass(frozen=True)
class ConsumerSettings:
    ack_wait_s: float = 30.0
    max_deliver: int = 10
    max_ack_pending: int = 10_000


LOG_EVENTS_SUBJECT = "neutrino.events.log.*"  # "a task's log grew", for live log tails (a subscription)


def log_event_subject(task_id: str) -> str:
    """Where "new lines in this task's log" is published (not on the task's subject: long-polls ignore it)."""
    return f"neutrino.events.log.{task_id}"


def event_subject(task_id: str) -> str:
    """Where one task's state changes are published: a long-poll listens to its task alone."""
    return f"neutrino.events.task.{task_id}"


NORMAL = "normal"
# The levels with a subject suffix and a consumer of their own; normal tasks keep the plain subject, so a
# pool that never sees another level works exactly as before (one consumer, one fetch per batch).
OTHER_PRIORITIES = tuple(level for level in PRIORITIES if level != NORMAL)


def task_subject(pool: str, function: str, priority: str = NORMAL) -> str:
    base = f"neutrino.{pool}.{function}"
    return base if priority == NORMAL else f"{base}.{priority}"


def pool_subject(pool: str, priority: str = NORMAL) -> str:
    # Three tokens and four never match each other's wildcards: the WorkQueue stream needs the consumers'
    # filters disjoint.
    return f"neutrino.{pool}.*" if priority == NORMAL else f"neutrino.{pool}.*.{priority}"


def consumer_name(pool: str, priority: str = NORMAL) -> str:
    # "prio_" never starts a normal consumer's name ("pool_"), whatever the pool is called.
    return f"pool_{pool}" if priority == NORMAL else f"prio_{priority}_{pool}"


def encode_task_message(*, task_id: str, function: str, args: dict[str, Any], max_retries: int,
                        timeout_ms: int, traceparent: str = "") -> bytes:
    body: dict[str, Any] = {"task_id": task_id, "function": function, "args": args, "max_retries": max_retries,
                            "timeout_ms": timeout_ms}
    if traceparent:  # the publish span the worker's spans continue (workers.engine.tracing)
        body["traceparent"] = traceparent
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True)
class TaskMessage:
    """A task message as published. Only `task_id` is to be trusted, and only as a name: a worker runs
    the function, arguments, timeout and retries of the task's row (`task_mark_running` returns them),
    so a message that anyone forged cannot change what a queued task runs. The other fields stay in
    the message for people reading the stream and for workers of older versions."""

    task_id: str
    function: str
    args: dict[str, Any]
    max_retries: int
    timeout_ms: int
    traceparent: str = ""  # W3C trace context of the publish, when tracing was on


class BadMessage(ValueError):
    """A message on a task subject that is not a task (a poison message)."""


def decode_task_message(data: bytes) -> TaskMessage:
    """The message's task id (a UUID) and, for logs, what it says it runs; BadMessage when it is no task."""
    try:
        body = json.loads(data)
        task_id = str(uuid.UUID(str(body["task_id"])))
        return TaskMessage(
            task_id=task_id,
            function=str(body.get("function", "")),
            args=dict(body.get("args") or {}),
            max_retries=int(body.get("max_retries", 0)),
            timeout_ms=int(body.get("timeout_ms", 0)),
            traceparent=str(body.get("traceparent") or ""),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadMessage(f"not a task message ({exc}): {data[:200]!r}") from exc


async def ensure_stream(
    js: JetStreamContext, pools: list[str], *, duplicate_window_s: float = 120.0, replicas: int = 1
) -> None:
    """Create the stream, or update it to exactly the given NATS pools' subjects.

    `replicas` is 3 on a NATS cluster (NEUTRINO_STREAM_REPLICAS): with 1, a queued task lives on one server.
    """
    subjects = sorted(pool_subject(p, level) for p in set(pools) for level in PRIORITIES)
    if not subjects:
        return
    config = StreamConfig(
        name=STREAM,
        subjects=subjects,
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        duplicate_window=duplicate_window_s,
        num_replicas=replicas,
    )
    try:
        info = await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(config)
        return
    if (
        sorted(info.config.subjects or []) != subjects
        or info.config.duplicate_window != duplicate_window_s
        or (info.config.num_replicas or 1) != replicas
    ):
        await js.update_stream(config)


async def ensure_consumer(js: JetStreamContext, pool: str, settings: ConsumerSettings,
                          priority: str = NORMAL) -> None:
    """Create or update the pool's durable consumer of one priority level.

    `add_consumer` on an existing durable is the server's create-or-update, so a changed
    ack_wait or max_deliver takes effect; `pull_subscribe(durable=...)` alone would not apply it.
    """
    await js.add_consumer(
        STREAM,
        ConsumerConfig(
            durable_name=consumer_name(pool, priority),
            filter_subject=pool_subject(pool, priority),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=settings.ack_wait_s,
            max_deliver=settings.max_deliver,
            max_ack_pending=settings.max_ack_pending,
        ),
    )


# A queued task whose pool's consumer holds no message is taken for lost (and published again by the
# autoscaler) this long after it was queued: a margin for the clocks of the hosts that wrote the row and
# that read the depth.
LOST_MESSAGE_AFTER_S = 30.0


@dataclass(frozen=True)
class PoolDepth:
    pending: int  # in the stream, not yet delivered
    in_flight: int  # delivered, not yet acknowledged
    known: bool = True  # False: the pool has no consumer (yet), so both counts are only a guess


async def pool_depth(js: JetStreamContext, pool: str) -> PoolDepth:
    """The pool's messages at every priority level (a level's consumer not made yet counts none)."""
    try:
        info = await js.consumer_info(STREAM, consumer_name(pool))
    except NotFoundError:
        return PoolDepth(pending=0, in_flight=0, known=False)
    pending, in_flight = int(info.num_pending or 0), int(info.num_ack_pending or 0)
    for level in OTHER_PRIORITIES:
        try:
            other = await js.consumer_info(STREAM, consumer_name(pool, level))
        except NotFoundError:
            continue
        pending += int(other.num_pending or 0)
        in_flight += int(other.num_ack_pending or 0)
    return PoolDepth(pending=pending, in_flight=in_flight)
