"""Heartbeats of the worker into `pools_app.Worker`, and the GPUs it reports there."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import threading
from datetime import datetime
from typing import Any

from django.db import DatabaseError, IntegrityError
from django.utils import timezone

from pools_app.models import Worker
from tasks_app.selectors.tasks import tasks_cancel_requested
from workers.pool_worker.db import db
from workers.pool_worker.state import RunningTasks

logger = logging.getLogger("neutrino.worker")


class Heartbeat:
    """Writes this worker's `Worker` row every `every_s` (and once more, stopped, at the end).

    Each beat also picks up the cancels whose message this worker missed while it was disconnected:
    they are in the task rows.
    """

    def __init__(self, *, worker_id: str, pool: str, host: str, pid: int, concurrency: int,
                 started_at: datetime, runs: RunningTasks, every_s: float) -> None:
        self.worker_id = worker_id
        self.pool = pool
        self.host = host
        self.pid = pid
        self.concurrency = concurrency
        self.started_at = started_at
        self.runs = runs
        self.every_s = every_s
        self.gpus: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._stopped = False

    def beat(self, *, stopped: bool = False) -> None:
        """Write the row (from a thread). After the stopped beat, later beats write nothing."""
        # A beat still in flight when the worker stops must not write over its stopped_at.
        with self._lock:
            if self._stopped:
                return
            self._stopped = stopped
            self._write_beat(stopped=stopped)

    def _write_beat(self, *, stopped: bool) -> None:
        now = timezone.now()
        fields: dict[str, Any] = {
            "pool": self.pool, "host": self.host, "pid": self.pid, "concurrency": self.concurrency,
            "running": self.runs.claimed(), "gpus": self.gpus, "last_heartbeat": now,
            "stopped_at": now if stopped else None,
        }
        if Worker.objects.filter(worker_id=self.worker_id).update(**fields):
            return
        try:
            Worker.objects.create(worker_id=self.worker_id, started_at=self.started_at, **fields)
        except IntegrityError:
            Worker.objects.filter(worker_id=self.worker_id).update(**fields)

    async def run(self) -> None:
        """Beat every `every_s` until cancelled; a failed beat is logged, not fatal."""
        while True:
            try:
                await db(self.beat)
                # Cancels whose message this worker missed (it was disconnected) are in the rows.
                for task_id in await db(tasks_cancel_requested, task_ids=self.runs.ids()):
                    self.runs.cancel(task_id)
            except DatabaseError as exc:
                logger.warning("heartbeat not written: %s", exc)
            except Exception:
                logger.exception("heartbeat failed")
            await asyncio.sleep(self.every_s)



def detect_gpus() -> list[dict[str, str]]:
    """The GPUs nvidia-smi sees, or [] when there is none (or no nvidia-smi)."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    try:
        out = subprocess.run(
            [binary, "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        name, _, memory = line.partition(",")
        if name.strip():
            gpus.append({"name": name.strip(), "memory": memory.strip()})
    return gpus
