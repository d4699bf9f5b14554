"""Task events: every state change is published on core NATS for live views and long-polls.

Events are hints, the database is the record: a consumer that misses one re-reads the row.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import transaction

from workers.engine.topology import event_subject


def task_event(task_id: str, status: str, **extra: Any) -> None:
    """Publish a state change and wake this process's long-polls on that task.

    Inside a transaction it waits for the commit: whoever the event wakes re-reads the row, and must
    find the change there.
    """
    if not transaction.get_autocommit():
        transaction.on_commit(lambda: task_event(task_id, status, **extra))
        return
    from tasks_app import runtime

    runtime.publish_event(event_subject(str(task_id)), {"task_id": str(task_id), "status": str(status), **extra})
    waiters.notify(str(task_id))


class Waiters:
    """Long-polls waiting for a task to change, woken by its events from any process.

    While at least one request waits on a task, this process subscribes to that task's event
    subject alone, so an HTTP process does not receive every event of the system.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, list[threading.Event]] = {}
        self._unsubscribe: dict[str, Callable[[], None]] = {}

    def register(self, task_id: str) -> threading.Event:
        from tasks_app import runtime

        event = threading.Event()
        with self._lock:
            first = task_id not in self._events
            self._events.setdefault(task_id, []).append(event)
        if first:
            bridge = runtime.broker()
            if bridge is not None:
                try:
                    unsubscribe = bridge.subscribe_temporary(event_subject(task_id), self.on_event)
                except Exception:
                    return event  # no NATS now: the waiter's periodic re-read still ends the wait
                with self._lock:
                    if task_id in self._events:
                        self._unsubscribe[task_id] = unsubscribe
                        return event
                unsubscribe()
        return event

    def unregister(self, task_id: str, event: threading.Event) -> None:
        unsubscribe = None
        with self._lock:
            events = self._events.get(task_id, [])
            if event in events:
                events.remove(event)
            if not events:
                self._events.pop(task_id, None)
                unsubscribe = self._unsubscribe.pop(task_id, None)
        if unsubscribe is not None:
            unsubscribe()

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
