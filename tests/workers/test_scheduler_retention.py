"""Retention run by real processes on this test's database: two `neutrino scheduler` processes pruning at
once, and `neutrino prune` (with `--dry-run`) as an operator runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import transaction
from django.utils import timezone

from tasks_app.models import Task, TaskAttempt, TaskStatus
from tests.conftest import _worker_database_env
from tests.servers import wait_for
from workers.engine.processes import stop_process

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]
ACTIVE = (TaskStatus.SCHEDULED, TaskStatus.PENDING, TaskStatus.QUEUED, TaskStatus.RUNNING)


def make_rows(status: str, age_days: float, count: int = 1) -> set[uuid.UUID]:
    now = timezone.now()
    made = Task.objects.bulk_create(
        Task(id=uuid.uuid4(), function_name="echo", status=status, pool="async", execution_mode="async",
             created_at=now - timedelta(days=age_days, seconds=i), timeout_ms=1000) for i in range(count))
    return {task.id for task in made}


@transaction.atomic  # the schedulers may be running: they see the tasks with their attempts, or none
def history() -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    """(rows the policy below deletes, rows it keeps), made in this test's database."""
    gone = make_rows("completed", 31, 2500) | make_rows("cancelled", 40, 20) | make_rows("failed", 91, 30)
    kept = (make_rows("completed", 29, 20) | make_rows("failed", 60, 5)  # failed: kept 90 days
            | make_rows("expired", 500, 5))  # expired: kept forever
    for status in ACTIVE:  # never deleted, however old
        kept |= make_rows(status, 1000, 3)
    TaskAttempt.objects.bulk_create(TaskAttempt(task_id=task_id, attempt=1, ended_at=timezone.now(),
                                                outcome=TaskAttempt.Outcome.RETRIED)
                                    for task_id in list(gone)[:50] + list(kept)[:5])
    return gone, kept


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, **_worker_database_env(), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
            "NEUTRINO_LOG_LEVEL": "INFO", "NEUTRINO_RETENTION_DAYS": "30", "NEUTRINO_RETENTION_DAYS_FAILED": "90",
            "NEUTRINO_RETENTION_DAYS_EXPIRED": "0", **extra}


def neutrino(*args: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "neutrino_site.cli", *args], env=environ, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_two_schedulers_prune_old_history_together_and_keep_the_rest(nats_server, tmp_path) -> None:
    environ = env(NEUTRINO_NATS_URL=nats_server.url, NEUTRINO_RETENTION_EVERY_S="0.2")
    logs = [tmp_path / f"scheduler-{i}.log" for i in range(2)]
    processes = []
    for log_path in logs:
        with open(log_path, "wb") as log:
            processes.append(subprocess.Popen([sys.executable, "-m", "neutrino_site.cli", "scheduler"], env=environ,
                                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
    try:
        # Both run their rounds before the rows come, so that they prune them at the same time.
        wait_for(lambda: all("retention every 0.2 s" in log.read_text() for log in logs), timeout_s=60,
                 what="both schedulers to start")
        gone, kept = history()
        wait_for(lambda: not Task.objects.filter(id__in=list(gone)).exists(), timeout_s=90,
                 what="the schedulers to delete the old finished tasks")
    finally:
        codes = [(stop_process(process, 30), process.returncode) for process in processes]
    texts = [log.read_text(errors="replace") for log in logs]
    assert codes == [(False, 0), (False, 0)], texts
    for text in texts:
        assert "Traceback" not in text and "database error" not in text and "trying again" not in text, text
    assert set(Task.objects.values_list("id", flat=True)) == kept
    assert TaskAttempt.objects.count() == 5, "the attempts of the deleted tasks went with them"
    deleted_by = [sum(int(n) for n in _deleted_counts(text)) for text in texts]
    assert sum(deleted_by) == len(gone), f"each row deleted once, by one of them: {deleted_by}"


def _deleted_counts(log: str) -> list[str]:
    return [line.split("deleted ", 1)[1].split(" ", 1)[0] for line in log.splitlines()
            if "retention: deleted" in line]


def test_prune_command_counts_then_deletes(tmp_path) -> None:
    gone, kept = history()
    dry = neutrino("prune", "--dry-run", environ=env())
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        f"history kept 30 days (expired: forever; failed: 90 days); would delete {len(gone)} finished tasks",
        "  completed: 2500", "  failed: 30", "  cancelled: 20"]
    assert Task.objects.count() == len(gone) + len(kept), "a dry run deletes nothing"

    result = neutrino("prune", "--json", environ=env())
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["deleted"] == {"completed": 2500, "failed": 30, "cancelled": 20}
    assert report["batches"] >= 5  # no more than 1,000 ids per DELETE
    assert set(Task.objects.values_list("id", flat=True)) == kept
