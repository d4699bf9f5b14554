"""What an HTTP server process builds once and hands down: its `Ports` (`tasks_app.core.ports`).

One of each per process (per gunicorn worker): the NATS connection, the publisher, the task events, the
ledger writer and the sync pool. Built on first use or at worker start (`warm_up`, from gunicorn's
post_worker_init), closed at exit (`shutdown`). Requests reach them as `request.ports` (`PortsMiddleware`).

When a test or `override_settings` changes a NEUTRINO_* setting, the parts built from it are built anew on
next use: the NATS side when the URL or publish timeout changed, the sync side when its settings did.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.signals import setting_changed
from django.db import DatabaseError, connection
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

from pools_app.catalog import PoolTable
from tasks_app.adapters.events import PublishedTaskEvents
from tasks_app.adapters.ledger import LedgerWriter
from tasks_app.core.conf import NeutrinoSettings, neutrino_settings
from tasks_app.core.ports import Ports
from tasks_app.core.registry import registered_tasks
from tasks_app.selectors.tasks import tasks_cancel_requested
from workers.engine.broker.bridge import NatsBridge
from workers.engine.broker.publisher import Publisher
from workers.engine.broker.wire import SyncPublisher, supported
from workers.engine.executor import Executor, ExecutorSettings
from workers.engine.objects import ensure_bucket
from workers.engine.spool import SPOOL_DIR_PREFIX
from workers.engine.topology import CANCEL_SUBJECT, ensure_stream

logger = logging.getLogger("neutrino.process")


@dataclass(frozen=True)
class _SyncSide:
    key: tuple[Any, ...]
    executor: Executor
    ledger: LedgerWriter
    spool_dir: str = ""  # [objects] where the children leave results too large for a reply (with NATS only)


@dataclass(frozen=True)
class _NatsSide:
    key: tuple[Any, ...]
    bridge: NatsBridge | None
    publisher: Publisher


_lock = threading.Lock()
_sync: _SyncSide | None = None
_nats: _NatsSide | None = None
_ports: Ports | None = None


def _sync_key(conf: NeutrinoSettings) -> tuple[Any, ...]:
    return (conf.task_modules, conf.sync_processes, conf.max_tasks_per_child, conf.max_payload_bytes,
            conf.start_method, conf.ledger_queue_size, conf.ledger_enabled, conf.log_max_bytes,
            bool(conf.nats_url), conf.inline_result_bytes, conf.max_object_bytes)


def _nats_key(conf: NeutrinoSettings) -> tuple[Any, ...]:
    return (conf.nats_url, conf.publish_timeout_s)


def http_ports() -> Ports:
    """This process's ports, built on first use."""
    ports = _ports
    if ports is not None:
        return ports
    with _lock:
        return _build()


def _build() -> Ports:
    global _sync, _nats, _ports
    if _ports is not None:
        return _ports
    conf = neutrino_settings()
    if _sync is None or _sync.key != _sync_key(conf):
        _close_sync()
        # [objects] With NATS, a sync result too large for a reply is stored like a queued task's.
        spool_dir = tempfile.mkdtemp(prefix=SPOOL_DIR_PREFIX + "sync-") if conf.nats_url else ""
        _sync = _SyncSide(
            key=_sync_key(conf),
            executor=Executor(ExecutorSettings(
                task_modules=conf.task_modules, processes=conf.sync_processes,
                max_tasks_per_child=conf.max_tasks_per_child, max_result_bytes=conf.max_payload_bytes,
                start_method=conf.start_method, pool="fast", log_max_bytes=conf.log_max_bytes,
                spool_dir=spool_dir, inline_result_bytes=conf.inline_result_bytes,
                max_object_bytes=conf.max_object_bytes,
            )),
            ledger=LedgerWriter(queue_size=conf.ledger_queue_size, enabled=conf.ledger_enabled),
            spool_dir=spool_dir,
        )
    if _nats is None or _nats.key != _nats_key(conf):
        _close_nats()
        _nats = _connect(conf, executor=_sync.executor)
    events = PublishedTaskEvents(_nats.publisher, _nats.bridge)
    _sync.ledger.on_written[:] = [events.emit_written]
    _ports = Ports(broker=_nats.bridge, publisher=_nats.publisher, events=events, ledger=_sync.ledger,
                   runner=_sync.executor, pools=PoolTable())
    return _ports


def _connect(conf: NeutrinoSettings, *, executor: Executor) -> _NatsSide:
    url = conf.nats_url
    if not url:
        return _NatsSide(key=_nats_key(conf), bridge=None, publisher=Publisher(None, timeout_s=conf.publish_timeout_s))

    def cancel(body: dict[str, Any]) -> None:
        # Whichever process runs the task kills its child; the others do not know it. The row is read
        # off the NATS loop: Django's ORM refuses to run inside an event loop, and the loop must not wait.
        task_id = body.get("task_id")
        if isinstance(task_id, str) and task_id in executor.running():
            threading.Thread(target=_cancel_if_requested, args=(executor, task_id), name="neutrino-cancel",
                             daemon=True).start()

    bridge = NatsBridge(url, name="neutrino-gateway")
    bridge.subscribe(CANCEL_SUBJECT, cancel)
    bridge.start()
    # A tls:// URL or credentials the blocking wire does not speak: every publish goes through the bridge.
    wire = SyncPublisher(url) if supported(url) else None
    return _NatsSide(key=_nats_key(conf), bridge=bridge,
                     publisher=Publisher(bridge, timeout_s=conf.publish_timeout_s, wire=wire))


def _cancel_if_requested(executor: Executor, task_id: str) -> None:
    """Kill the child running `task_id` if its row says a cancel was asked for: a message alone kills nothing
    (the cancel service marks the row before it publishes)."""
    try:
        if tasks_cancel_requested(task_ids=[task_id]):
            executor.cancel(task_id)
    except DatabaseError as exc:
        logger.warning("cancel of %s not checked against its row (%s); ignored", task_id, exc)
    finally:
        connection.close()  # this short-lived thread leaves no database connection behind


def warm_up() -> None:
    """Load the task modules, start the sync pool and connect to NATS before the first call."""
    registered_tasks()
    ports = http_ports()
    assert _sync is not None
    _sync.executor.start()
    ensure_topology(ports)


def ensure_topology(ports: Ports) -> None:
    """Create the stream for every NATS pool, so tasks submitted before any worker starts wait in it."""
    if ports.broker is None:
        return
    pools = ports.pools.queued_names()
    try:
        replicas = neutrino_settings().stream_replicas
        ports.broker.call(lambda js, nc: ensure_stream(js, pools, replicas=replicas), timeout_s=5.0)
    except Exception as exc:
        logger.warning("could not create or update the JetStream stream yet (%s); workers will", exc)
    try:  # [objects] the bucket for large results (sync ones are stored by this process)
        replicas = neutrino_settings().stream_replicas
        ttl_s = neutrino_settings().retention_days * 86400.0
        ports.broker.call(lambda js, nc: ensure_bucket(js, ttl_s=ttl_s, replicas=replicas), timeout_s=5.0)
    except Exception as exc:
        logger.warning("could not create the results bucket yet (%s); workers will", exc)


def shutdown() -> None:
    """Flush the ledger, then stop the sync pool's children and the NATS connection."""
    global _ports
    with _lock:
        _ports = None
        _close_sync()
        _close_nats()


def _close_sync() -> None:
    global _sync
    if _sync is not None:
        _sync.ledger.close()
        _sync.executor.shutdown(wait=True)
        if _sync.spool_dir:
            shutil.rmtree(_sync.spool_dir, ignore_errors=True)
        _sync = None


def _close_nats() -> None:
    global _nats
    if _nats is not None:
        _nats.publisher.close()
        if _nats.bridge is not None:
            _nats.bridge.close(timeout_s=2.0)
        _nats = None


@receiver(setting_changed)
def _rebuild_on_change(*, setting: str, **kwargs: object) -> None:
    """A changed NEUTRINO_* setting: the next request builds the ports again (only the parts it changes)."""
    global _ports
    if setting.startswith("NEUTRINO_"):
        _ports = None


class PortsMiddleware:
    """Hands this process's ports to every request as `request.ports`."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.ports = http_ports()  # type: ignore[attr-defined]
        return self.get_response(request)
