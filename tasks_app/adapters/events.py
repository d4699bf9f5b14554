"""Task events: every state change is published on core NATS for live views and long-polls.

Events are hints, the database is the record: a consumer that misses one re-reads the row.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.db import transaction

from tasks_app.core.ports import Broker, Publisher
from workers.engine.topology import event_subject, log_event_subject


class PublishedTaskEvents:
    """The process's `TaskEvents` port: publishes through `publisher`, and wakes this process's long-polls.

    While at least one request waits on a task, this process subscribes (through `broker`) to that
    task's event subject alone, so an HTTP process does not receive every event of the system.
    """

    def __init__(self, publisher: Publisher, broker: Broker | None) -> None:
        self._publisher = publisher
        self._broker = broker
        self._lock = threading.Lock()
        self._events: dict[str, list[threading.Event]] = {}
        self._unsubscribe: dict[str, Callable[[], None]] = {}

    def emit(self, task_id: str, status: str, **extra: Any) -> None:
        """Publish a state change and wake this process's long-polls on that task.

        Inside a transaction it waits for the commit: whoever the event wakes re-reads the row, and must
        find the change there.
        """
        if not transaction.get_autocommit():
            transaction.on_commit(lambda: self.emit(task_id, status, **extra))
            return
        self._publish(str(task_id), str(status), extra)

    def _publish(self, task_id: str, status: str, extra: dict[str, Any]) -> None:
        self._publisher.publish_event(event_subject(task_id), {"task_id": task_id, "status": status, **extra})
        self._notify(task_id)

    def emit_many(self, task_ids: Sequence[str], status: str) -> None:
        """One hand-off for many events (a publish per task would cost a batch request ~0.1 ms each)."""
        self._publisher.publish_events(
            [(event_subject(str(task_id)), {"task_id": str(task_id), "status": str(status)}) for task_id in task_ids]
        )
        for task_id in task_ids:
            self._notify(str(task_id))

    def emit_log(self, task_id: str, attempt: int) -> None:
        """New lines in a task's log are stored (live log tails re-read them); once the transaction commits."""
        if not transaction.get_autocommit():
            transaction.on_commit(lambda: self.emit_log(task_id, attempt))
            return
        self._publisher.publish_event(log_event_subject(str(task_id)), {"task_id": str(task_id), "attempt": attempt})

    def emit_written(self, rows: list[dict[str, Any]]) -> None:
        """The ledger writer's hook: an event for each row whose status it wrote (its batch is committed),
        and one for each task whose log grew."""
        for row in rows:
            if "status" in row:
                self._publish(str(row["task_id"]), str(row["status"]), {})
            elif "log_attempt" in row:
                self.emit_log(str(row["task_id"]), int(row["log_attempt"]))

    @contextmanager
    def watch(self, task_id: str) -> Iterator[threading.Event]:
        """An event set whenever `task_id` changes, from any process, while the block runs."""
        event = self._register(task_id)
        try:
            yield event
        finally:
            self._unregister(task_id, event)

    def _register(self, task_id: str) -> threading.Event:
        event = threading.Event()
        with self._lock:
            first = task_id not in self._events
            self._events.setdefault(task_id, []).append(event)
        if first and self._broker is not None:
            try:
                unsubscribe = self._broker.subscribe_temporary(event_subject(task_id), self._on_event)
            except Exception:
                return event  # no NATS now: the waiter's periodic re-read still ends the wait
            with self._lock:
                if task_id in self._events:
                    self._unsubscribe[task_id] = unsubscribe
                    return event
            unsubscribe()
        return event

    def _unregister(self, task_id: str, event: threading.Event) -> None:
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

    def _notify(self, task_id: str) -> None:
        with self._lock:
            events = list(self._events.get(task_id, ()))
        for event in events:
            event.set()

    def _on_event(self, body: dict[str, Any]) -> None:
        task_id = body.get("task_id")
        if isinstance(task_id, str):
            self._notify(task_id)
