"""Process-wide singletons of the HTTP server: the executor, the ledger writer and the NATS bridge.

Each server process (each gunicorn worker) owns one of each, created on first
use or at worker start-up (`warm_up`), and closed at exit (`shutdown`).
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

from tasks_app.adapters.ledger import LedgerWriter
from tasks_app.core.conf import neutrino_settings
from workers.engine.broker.bridge import BrokerDown, NatsBridge, PublishTimeout
from workers.engine.broker.wire import AckTimeout, NoResponders, NotConnected, PublishRejected, SyncPublisher, supported
from workers.engine.executor import Executor, ExecutorSettings
from workers.engine.topology import CANCEL_SUBJECT, ensure_stream

logger = logging.getLogger("neutrino.runtime")
_broker_lock = threading.Lock()
_broker: NatsBridge | None = None
_publisher: SyncPublisher | None = None


@functools.cache
def executor() -> Executor:
    conf = neutrino_settings()
    return Executor(
        ExecutorSettings(
            task_modules=conf.task_modules,
            processes=conf.sync_processes,
            max_tasks_per_child=conf.max_tasks_per_child,
            max_result_bytes=conf.max_payload_bytes,
            start_method=conf.start_method,
            pool="fast",
        )
    )


@functools.cache
def ledger() -> LedgerWriter:
    conf = neutrino_settings()
    writer = LedgerWriter(queue_size=conf.ledger_queue_size, enabled=conf.ledger_enabled)
    writer.on_written.append(_publish_written)
    return writer


def _publish_written(rows: list[dict[str, Any]]) -> None:
    from tasks_app.adapters.events import task_event

    for row in rows:
        if "status" in row:
            task_event(row["task_id"], row["status"])


def broker() -> NatsBridge | None:
    """The NATS bridge, or None when NEUTRINO_NATS_URL is not set (sync tasks only)."""
    global _broker
    if _broker is not None:
        return _broker
    url = neutrino_settings().nats_url
    if not url:
        return None
    with _broker_lock:
        if _broker is None:
            bridge = NatsBridge(url, name="neutrino-gateway")
            bridge.subscribe(CANCEL_SUBJECT, _on_cancel)
            _broker = bridge.start()
    return _broker


def _sync_publisher() -> SyncPublisher | None:
    """This process's blocking publisher, or None when NATS is not configured or its URL needs nats.py (TLS)."""
    global _publisher
    url = neutrino_settings().nats_url
    if not url or not supported(url):
        return None
    if _publisher is None:
        with _broker_lock:
            if _publisher is None:
                _publisher = SyncPublisher(url)
    return _publisher


def publish_task(subject: str, payload: bytes, *, msg_id: str) -> None:
    """Publish a task to JetStream from the calling thread and wait for the ack.

    Raises `BrokerDown` when the message was certainly not stored (no connection, no stream for the
    subject) and `PublishTimeout` when it may have been (the ack did not come back in time).
    """
    timeout_s = neutrino_settings().publish_timeout_s
    publisher = _sync_publisher()
    if publisher is None:
        bridge = broker()
        if bridge is None:
            raise BrokerDown("NEUTRINO_NATS_URL is not set")
        bridge.publish_task(subject, payload, msg_id=msg_id, timeout_s=timeout_s)
        return
    try:
        publisher.publish_js(subject, payload, msg_id=msg_id, timeout_s=timeout_s)
    except (NotConnected, PublishRejected) as exc:
        raise BrokerDown(str(exc)) from exc
    except (AckTimeout, NoResponders) as exc:
        # Maybe stored, or storable in a moment: the row stays pending and the sweeper republishes it.
        raise PublishTimeout(str(exc)) from exc


def publish_event(subject: str, body: dict[str, Any]) -> None:
    """Fire-and-forget core NATS publish from the calling thread (task events, cancel broadcasts)."""
    publisher = _sync_publisher()
    if publisher is not None:
        publisher.publish(subject, body)
        return
    bridge = broker()
    if bridge is not None:
        bridge.publish_event(subject, body)


def _on_cancel(body: dict[str, Any]) -> None:
    task_id = body.get("task_id")
    if isinstance(task_id, str) and executor.cache_info().currsize:
        executor().cancel(task_id)


def warm_up() -> None:
    """Load the task modules, start the sync pool and connect to NATS before the first call."""
    from tasks_app.core.registry import registered_tasks

    registered_tasks()
    executor().start()
    ensure_topology()


def ensure_topology() -> None:
    """Create the stream for every NATS pool, so tasks submitted before any worker starts wait in it."""
    bridge = broker()
    if bridge is None:
        return
    from pools_app.selectors import nats_pool_names

    pools = nats_pool_names()
    try:
        replicas = neutrino_settings().stream_replicas
        bridge.call(lambda js, nc: ensure_stream(js, pools, replicas=replicas), timeout_s=5.0)
    except Exception as exc:
        logger.warning("could not create or update the JetStream stream yet (%s); workers will", exc)


def shutdown() -> None:
    """Flush the ledger, then stop the sync pool's children and the NATS bridge."""
    global _broker, _publisher
    if ledger.cache_info().currsize:
        ledger().close()
    if executor.cache_info().currsize:
        executor().shutdown(wait=True)
    if _broker is not None:
        _broker.close()
        _broker = None
    if _publisher is not None:
        _publisher.close()
        _publisher = None
