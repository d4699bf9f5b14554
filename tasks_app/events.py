"""Task events: every state change is published on core NATS for live views and long-polls.

Events are hints, the database is the record: a consumer that misses one re-reads the row.
"""

from __future__ import annotations

import threading
from typing import Any

from workers.topology import EVENTS_SUBJECT


def task_event(task_id: str, status: str, **extra: Any) -> None:
    """Publish a state change and wake this process's long-polls on that task."""
    from tasks_app import runtime

    body = {"task_id": str(task_id), "status": str(status), **extra}
    broker = runtime.broker()
    if broker is not None:
        broker.publish_event(EVENTS_SUBJECT, body)
    waiters.notify(str(task_id))


class Waiters:
    """Long-polls waiting for a task to change, woken by events from any process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, list[threading.Event]] = {}

    def register(self, task_id: str) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._events.setdefault(task_id, []).append(event)
        return event

    def unregister(self, task_id: str, event: threading.Event) -> None:
        with self._lock:
            events = self._events.get(task_id, [])
            if event in events:
                events.remove(event)
            if not events:
                self._events.pop(task_id, None)

    def notify(self, task_id: str) -> None:
        with self._lock:
            events = list(self._events.get(task_id, ()))
        for event in events:
            event.set()

    def on_event(self, body: dict[str, Any]) -> None:
        task_id = body.get("task_id")
        if isinstance(task_id, str):
            self.notify(task_id)


waiters = Waiters()
