"""The ports: the small interfaces through which services reach what their process holds once.

Each process builds its own at start and hands them down (`Ports`): the HTTP server in
`neutrino_site.process`, a pool worker in `workers.pool_worker`. Services take what they use as
arguments and never look a connection up; so a worker process holds one NATS connection, and tests
or another process can hand in their own.

Imports no Django.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from workers.engine.broker.errors import BrokerError
from workers.engine.executor import RunResult

Handler = Callable[[dict[str, Any]], None]


class Broker(Protocol):
    """The process's NATS connection, for what is not a publish: JetStream API calls and subscriptions."""

    url: str

    @property
    def connected(self) -> bool: ...

    def call(self, coro_factory: Callable[[Any, Any], Awaitable[Any]], timeout_s: float) -> Any: ...

    def subscribe_temporary(self, subject: str, handler: Handler, timeout_s: float = 2.0) -> Callable[[], None]: ...


class Publisher(Protocol):
    """Queues tasks on JetStream and sends events; raises `BrokerError`s (`workers.engine.broker.errors`)."""

    def publish_task(self, subject: str, payload: bytes, *, msg_id: str) -> int: ...

    def publish_tasks(self, messages: Sequence[tuple[str, bytes, str]]) -> list[int | BrokerError]: ...

    def publish_event(self, subject: str, body: dict[str, Any]) -> None: ...

    def publish_events(self, events: Sequence[tuple[str, dict[str, Any]]]) -> None: ...


class TaskEvents(Protocol):
    """State changes of tasks, published for live views and long-polls (hints: the database is the record)."""

    def emit(self, task_id: str, status: str, **extra: Any) -> None: ...

    def emit_many(self, task_ids: Sequence[str], status: str) -> None: ...

    def emit_log(self, task_id: str, attempt: int) -> None: ...

    def watch(self, task_id: str) -> AbstractContextManager[threading.Event]: ...


class Ledger(Protocol):
    """Sync tasks' rows, written in batches off the request path."""

    def record_start(self, task_id: str, **fields: Any) -> None: ...

    def record_finish(self, task_id: str, **fields: Any) -> None: ...

    def record_queued(self, task_id: str) -> None: ...

    def record_progress(self, task_id: str, fraction: float, message: str) -> None: ...

    def record_log(self, task_id: str, attempt: int, seq: int, data: bytes, dropped_bytes: int) -> None: ...

    def flush(self, timeout_s: float = 10.0) -> bool: ...


class SyncRunner(Protocol):
    """Runs a sync task in a child process of this process's pool."""

    def run(self, *, task_id: str, function: str, args: dict[str, Any], timeout_ms: int,
            on_progress: Callable[[float, str], None] | None = None,
            on_log: Callable[[bytes, int], None] | None = None) -> RunResult: ...

    def cancel(self, task_id: str) -> bool: ...


@dataclass(frozen=True)
class PoolRoute:
    """What a submit needs to know of the pool a task runs in."""

    name: str
    queued: bool  # its tasks go through NATS (an http pool's are answered by a gateway)
    enabled: bool
    draining: bool
    max_backlog: int  # 0: no limit


class PoolCatalog(Protocol):
    """The worker pools an admin defined."""

    def route(self, name: str) -> PoolRoute | None: ...

    def names(self) -> list[str]: ...

    def queued_names(self) -> list[str]: ...


@dataclass(frozen=True)
class Ports:
    """Everything a service may reach outside the database, built once per process."""

    broker: Broker | None  # None: NEUTRINO_NATS_URL is not set (sync tasks only)
    publisher: Publisher
    events: TaskEvents
    ledger: Ledger
    runner: SyncRunner | None  # None in a process without a sync pool (a pool worker)
    pools: PoolCatalog


def ports_of(request: Any) -> Ports:
    """The ports the process handed to this request (`neutrino_site.process.PortsMiddleware`)."""
    ports: Ports = request.ports
    return ports
