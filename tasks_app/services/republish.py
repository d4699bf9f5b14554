"""The sweepers' writes: publish again what the broker never confirmed (`task_republish_pending`) or lost
(`task_republish_lost`). Both publish the row's own columns, never a caller's message.

A pending row is one whose publish was not confirmed: a submit whose ack did not come back, or a delayed
task the scheduler released (scheduled -> pending, `tasks_app.services.delays`) and then died before
publishing. The pending sweeper waits `older_than_s` after the later of `created_at` and `run_at` before
it republishes, so it leaves alone a row that a submit or the scheduler is publishing right now.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from tasks_app.core.ports import Ports, Publisher
from tasks_app.models import Task, TaskStatus
from workers.engine.broker.errors import BrokerError
from workers.engine.topology import encode_task_message, task_subject

logger = logging.getLogger("neutrino.submissions")


def task_republish_pending(*, ports: Ports, pool: str, older_than_s: float, limit: int = 500) -> int:
    """The sweeper: publish again the pending rows the broker never confirmed (same msg id, so deduped)."""
    if ports.broker is None:
        return 0
    cutoff = timezone.now() - timedelta(seconds=older_than_s)
    # A delayed task created long ago was released (made pending) just now: its own run_at counts too.
    # (One released late, its run_at already past the cutoff, may be published twice at once: the msg
    # id is the task id, so JetStream keeps one message, and only a delivery that claims the row runs it.)
    rows = list(
        Task.objects.filter(status=TaskStatus.PENDING, pool=pool, created_at__lt=cutoff)
        .filter(Q(run_at__isnull=True) | Q(run_at__lt=cutoff))
        .order_by("created_at")[:limit]
    )
    republished = 0
    for task in rows:
        try:
            task_publish_pending(ports=ports, task=task)
        except BrokerError as exc:
            logger.warning("sweeper could not republish task %s: %s", task.id, exc)
            break
        republished += 1
    return republished


def task_publish_pending(*, ports: Ports, task: Task) -> None:
    """Publish one pending row from its own columns (msg id = task id) and mark it queued.

    Raises BrokerError when the broker did not take it: the row stays pending for the sweeper.
    """
    ports.publisher.publish_task(
        task_subject(task.pool, task.function_name, task.priority),
        encode_task_message(task_id=str(task.id), function=task.function_name,
                            args=task.args if isinstance(task.args, dict) else {},
                            max_retries=task.max_retries, timeout_ms=task.timeout_ms),
        msg_id=str(task.id),
    )
    updated = Task.objects.filter(id=task.id, status=TaskStatus.PENDING).update(
        status=TaskStatus.QUEUED, queued_at=timezone.now(), error=""
    )
    if updated:
        ports.events.emit(str(task.id), TaskStatus.QUEUED)


def task_republish_lost(*, publisher: Publisher, pool: str, older_than_s: float, limit: int = 500) -> int:
    """Publish again the `queued` rows of `pool` whose message the broker lost; returns how many.

    Call it only right after reading that the pool's consumer holds nothing: no message waiting and none
    delivered but unacknowledged. A row is written `queued` only after JetStream acknowledged its
    message, and a retried or handed-back row keeps its message in flight until it is redelivered, so a
    row queued before that read whose pool holds no message has lost it (a nats-server killed before
    its store reached the disk). `older_than_s` leaves a margin for clocks that differ between hosts.

    Each row gets a new message id (a lost message's id may still be in the duplicate window) made from
    its `queued_at`, which is then moved on: two autoscalers repeating this make one message, and a row
    is not republished again before `older_than_s` has passed. A duplicate message is harmless anyway:
    only a delivery that claims the row runs it.
    """
    cutoff = timezone.now() - timedelta(seconds=older_than_s)
    rows = list(
        Task.objects.filter(status=TaskStatus.QUEUED, pool=pool, queued_at__lt=cutoff)
        .order_by("queued_at")[:limit]
    )
    republished = 0
    for task in rows:
        assert task.queued_at is not None  # filtered on it
        try:
            publisher.publish_task(
                task_subject(task.pool, task.function_name, task.priority),
                encode_task_message(task_id=str(task.id), function=task.function_name,
                                    args=task.args if isinstance(task.args, dict) else {},
                                    max_retries=task.max_retries, timeout_ms=task.timeout_ms),
                msg_id=f"{task.id}:lost:{task.queued_at.timestamp():.6f}",
            )
        except BrokerError as exc:
            logger.warning("could not republish task %s, whose message was lost: %s", task.id, exc)
            break
        Task.objects.filter(id=task.id, status=TaskStatus.QUEUED, queued_at=task.queued_at).update(
            queued_at=timezone.now())
        logger.warning("task %s of pool %s was queued but its message was gone from the stream; published again",
                       task.id, pool)
        republished += 1
    return republished
