"""Process-wide singletons of the HTTP server: the executor, the ledger writer and the NATS bridge.

Each server process (each gunicorn worker) owns one of each, created on first
use or at worker start-up (`warm_up`), and closed at exit (`shutdown`).
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

from tasks_app.conf import neutrino_settings
from tasks_app.ledger import LedgerWriter
from workers.bridge import NatsBridge
from workers.executor import Executor, ExecutorSettings
from workers.topology import CANCEL_SUBJECT, EVENTS_SUBJECT

logger = logging.getLogger("neutrino.runtime")
_broker_lock = threading.Lock()
_broker: NatsBridge | None = None


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
        )
    )


@functools.cache
def ledger() -> LedgerWriter:
    conf = neutrino_settings()
    writer = LedgerWriter(queue_size=conf.ledger_queue_size, enabled=conf.ledger_enabled)
    writer.on_written.append(_publish_written)
    return writer


def _publish_written(rows: list[dict[str, Any]]) -> None:
    from tasks_app.events import task_event

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
            from tasks_app.events import waiters

            bridge = NatsBridge(url, name="neutrino-gateway")
            bridge.subscribe(EVENTS_SUBJECT, waiters.on_event)
            bridge.subscribe(CANCEL_SUBJECT, _on_cancel)
            _broker = bridge.start()
    return _broker


def _on_cancel(body: dict[str, Any]) -> None:
    task_id = body.get("task_id")
    if isinstance(task_id, str) and executor.cache_info().currsize:
        executor().cancel(task_id)


def warm_up() -> None:
    """Load the task modules, start the sync pool and connect to NATS before the first call."""
    from tasks_app.registry import registered_tasks

    registered_tasks()
    executor().start()
    broker()


def shutdown() -> None:
    """Flush the ledger, then stop the sync pool's children and the NATS bridge."""
    global _broker
    if ledger.cache_info().currsize:
        ledger().close()
    if executor.cache_info().currsize:
        executor().shutdown(wait=True)
    if _broker is not None:
        _broker.close()
        _broker = None
