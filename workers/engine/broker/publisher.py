"""The one publisher of a process: queues tasks on JetStream and sends task events on core NATS.

It puts two transports behind one interface and one error tree (`workers.engine.broker.errors`):

- the nats.py connection (`NatsBridge`), which every process holds once: pipelined batch publishes,
  subscriptions, JetStream API calls;
- in a threaded HTTP process, the blocking wire publisher (`SyncPublisher`) for single publishes, which
  saves the thread hop to the bridge's loop (0.4-0.6 ms a call on this machine).

Without a NATS URL there is no connection: a task publish raises `BrokerDown` (the caller answers 503)
and events go nowhere (they are hints; the database is the record).

Imports no Django.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from workers.engine.broker.bridge import NatsBridge
from workers.engine.broker.errors import BrokerDown, BrokerError
from workers.engine.broker.wire import SyncPublisher


class Publisher:
    def __init__(self, bridge: NatsBridge | None, *, timeout_s: float, wire: SyncPublisher | None = None) -> None:
        self.bridge = bridge
        self.timeout_s = timeout_s
        self._wire = wire

    def publish_task(self, subject: str, payload: bytes, *, msg_id: str) -> int:
        """Publish to JetStream (msg id for dedup) and wait for the ack; returns the stream sequence.

        Raises `BrokerDown` when the message was certainly not stored, `PublishTimeout` when it may have been.
        """
        if self._wire is not None:
            return self._wire.publish_js(subject, payload, msg_id=msg_id, timeout_s=self.timeout_s)
        return self._connected().publish_task(subject, payload, msg_id=msg_id, timeout_s=self.timeout_s)

    def publish_tasks(self, messages: Sequence[tuple[str, bytes, str]]) -> list[int | BrokerError]:
        """Publish `(subject, payload, msg_id)` messages pipelined; one sequence or error per message, in order."""
        return self._connected().publish_tasks(messages, timeout_s=self.timeout_s)

    def publish_event(self, subject: str, body: dict[str, Any]) -> None:
        """Core NATS, fire and forget."""
        if self._wire is not None:
            self._wire.publish(subject, body)
        elif self.bridge is not None:
            self.bridge.publish_event(subject, body)

    def publish_events(self, events: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Many `(subject, body)` events in one hand-off."""
        if self.bridge is not None:
            self.bridge.publish_events(events)

    def close(self) -> None:
        if self._wire is not None:
            self._wire.close()

    def _connected(self) -> NatsBridge:
        if self.bridge is None:
            raise BrokerDown("NEUTRINO_NATS_URL is not set")
        return self.bridge
