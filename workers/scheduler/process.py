"""`neutrino scheduler`: runs the scheduler's jobs (`workers.scheduler.jobs`) until SIGTERM / SIGINT.

One thread, one loop: each job runs when its interval has passed, one after the other, so a job that
takes long delays the others instead of overlapping with itself. The process builds its ports once (one
NATS connection, a publisher, the task events, a ledger writer) and hands them to every job.

Any number of scheduler processes may run (one per `neutrino dev`, one Deployment in Kubernetes, a
second one during a rollout): the jobs claim their work in the database, so two never do it twice.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from types import FrameType

from django.db import DatabaseError, connection

from pools_app.catalog import PoolTable
from tasks_app.adapters.events import PublishedTaskEvents
from tasks_app.adapters.ledger import LedgerWriter
from tasks_app.core.conf import neutrino_settings
from tasks_app.core.ports import Ports
from tasks_app.core.registry import registered_tasks
from tasks_app.services.schedules import schedules_sync_code
from workers.engine import tracing
from workers.engine.broker.bridge import NatsBridge
from workers.engine.broker.connect import shown
from workers.engine.broker.publisher import Publisher
from workers.engine.broker.wire import SyncPublisher, supported
from workers.scheduler.jobs import Job, scheduler_jobs

logger = logging.getLogger("neutrino.scheduler")

IDLE_WAIT_S = 0.05  # the loop's granularity: no job runs more often than this


def run_scheduler(*, once: bool = False) -> int:
    """Run the jobs until stopped (`once`: one round of each, then exit). Returns the exit code."""
    conf = neutrino_settings()
    if not conf.nats_url:
        print("neutrino scheduler: no NATS server configured: pass --nats-url or set NEUTRINO_NATS_URL",
              file=sys.stderr)
        return 2
    tracing.setup(enabled=conf.tracing, service_name="neutrino-scheduler", exporter=conf.trace_exporter)
    registered_tasks()  # the task modules, for the schedules declared in code
    _sync_code_schedules()
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
    bridge = NatsBridge(conf.nats_url, name="neutrino-scheduler").start()
    ledger = LedgerWriter(queue_size=conf.ledger_queue_size, enabled=conf.ledger_enabled)
    wire = SyncPublisher(conf.nats_url) if supported(conf.nats_url) else None
    publisher = Publisher(bridge, timeout_s=conf.publish_timeout_s, wire=wire)
    ports = scheduler_ports(bridge=bridge, publisher=publisher, ledger=ledger)
    jobs = scheduler_jobs(conf)
    logger.info("neutrino scheduler: NATS %s; jobs: %s", shown(conf.nats_url),
                ", ".join(f"{job.name} every {job.every_s:g} s" for job in jobs) or "none")
    try:
        if once:
            for job in jobs:
                _run_job(job, ports)
        else:
            _loop(jobs, ports, stopping)
    finally:
        ledger.close()
        publisher.close()
        bridge.close(timeout_s=2.0)
    logger.info("neutrino scheduler stopped")
    return 0


def _sync_code_schedules() -> None:
    """Make the schedules of `@app.task(schedule=...)` match the code (a database away: the next start does)."""
    try:
        report = schedules_sync_code(specs=registered_tasks())
    except DatabaseError as exc:
        logger.warning("schedules declared in code not synced (database error: %s); the next start syncs them", exc)
        connection.close()
        return
    for what in ("created", "updated", "paused"):
        if names := getattr(report, what):
            logger.info("schedules declared in code: %s %s", what, ", ".join(names))


def scheduler_ports(*, bridge: NatsBridge, publisher: Publisher, ledger: LedgerWriter) -> Ports:
    events = PublishedTaskEvents(publisher, None)
    ledger.on_written[:] = [events.emit_written]
    return Ports(broker=bridge, publisher=publisher, events=events, ledger=ledger, runner=None, pools=PoolTable())


def _loop(jobs: list[Job], ports: Ports, stopping: threading.Event) -> None:
    due = {job.name: 0.0 for job in jobs}
    while not stopping.is_set():
        for job in jobs:
            now = time.monotonic()
            if now >= due[job.name]:
                due[job.name] = now + job.every_s
                _run_job(job, ports)
            if stopping.is_set():
                return
        wait = min(due.values(), default=time.monotonic() + 1.0) - time.monotonic()
        stopping.wait(max(IDLE_WAIT_S, wait))


def _run_job(job: Job, ports: Ports) -> None:
    try:
        count = job.run(ports)
    except DatabaseError as exc:
        logger.warning("%s: database error (%s); trying again next round", job.name, exc)
        connection.close()  # a dropped connection (database restart) is opened anew next round
        return
    except Exception:
        logger.exception("%s failed; trying again next round", job.name)
        return
    if count:
        logger.info("%s: %d", job.name, count)
