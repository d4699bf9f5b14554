"""The worker's control subscriptions: cancel requests (core NATS) and JetStream's max-deliveries advisories."""

from __future__ import annotations

import json
import logging

import nats.js.errors
from django.db import DatabaseError
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from neutrino.app import PRIORITIES
from tasks_app.core.conf import NeutrinoSettings
from tasks_app.core.ports import TaskEvents
from tasks_app.selectors.tasks import tasks_cancel_requested
from tasks_app.services import tasks as services
from workers.engine.topology import STREAM, BadMessage, consumer_name, decode_task_message
from workers.pool_worker.db import db
from workers.pool_worker.state import RunningTasks

logger = logging.getLogger("neutrino.worker")


class Control:
    """Acts on the two control subjects: kills the child of a cancelled task that runs here, and fails
    (then deletes) a message whose worker died on its last delivery."""

    def __init__(self, *, js: JetStreamContext, pool: str, conf: NeutrinoSettings, runs: RunningTasks,
                 events: TaskEvents) -> None:
        self.js = js
        self.events = events
        self.pool = pool
        self.conf = conf
        self.runs = runs

    async def on_cancel(self, msg: Msg) -> None:
        try:
            task_id = json.loads(msg.data).get("task_id")
        except (ValueError, AttributeError):
            return
        if not isinstance(task_id, str) or task_id not in self.runs:
            return
        # Kill only what the row says was cancelled: a forged cancel must not kill a task whose row then
        # stays `running` (the cancel service marks the row before it publishes).
        try:
            requested = bool(await db(tasks_cancel_requested, task_ids=[task_id]))
        except DatabaseError as exc:
            logger.warning("cancel of %s not checked against its row (%s); ignored", task_id, exc)
            return
        if requested:
            self.runs.cancel(task_id)
        else:
            logger.warning("ignored a cancel for task %s: its row was not cancelled", task_id)

    async def on_max_deliveries(self, msg: Msg) -> None:
        """A message that reached max_deliver: its worker died on the last delivery. Fail it and delete it."""
        try:
            body = json.loads(msg.data)
            seq = int(body["stream_seq"])
        except (ValueError, KeyError, TypeError):
            return
        if body.get("stream") != STREAM or body.get("consumer") not in {
            consumer_name(self.pool, level) for level in PRIORITIES
        }:
            return
        deliveries = body.get("deliveries", self.conf.max_deliver)
        try:
            raw = await self.js.get_msg(STREAM, seq)
        except nats.js.errors.NotFoundError:
            return
        except Exception as exc:
            logger.warning("cannot read message %d after max deliveries: %s", seq, exc)
            return
        try:
            task = decode_task_message(raw.data or b"")
        except BadMessage:
            task = None
        if task is not None and task.task_id in self.runs:
            return  # it still runs here; this worker settles it
        if task is not None:
            error = (f"gave up after {deliveries} deliveries: the worker running it stopped or died each time "
                     f"(NEUTRINO_MAX_DELIVER={self.conf.max_deliver}); deliveries exhausted")
            try:
                failed = await db(services.task_mark_failed, events=self.events, task_id=task.task_id, attempt=None,
                                  error=error, error_type="DeliveriesExhausted")
            except DatabaseError as exc:
                logger.error("cannot fail task %s after max deliveries: %s", task.task_id, exc)
                return  # keep the message: a later advisory or a person can act on it
            if failed:
                logger.info("end %s %s: failed: %s", task.function, task.task_id, error)
        try:
            await self.js.delete_msg(STREAM, seq)
        except Exception as exc:
            logger.debug("delete of message %d failed: %s", seq, exc)

