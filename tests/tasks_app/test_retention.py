"""Retention of history: the policy read from the settings, and the pruning service on a real database."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.utils import timezone

from tasks_app.core.conf import neutrino_settings
from tasks_app.models import Schedule, ScheduleFire, Task, TaskAttempt, TaskLogChunk, TaskStatus
from tasks_app.selectors.retention import RetentionPolicy, retention_policy, tasks_past_retention
from tasks_app.services.retention import PruneLimits, tasks_prune
from workers.scheduler.jobs import scheduler_jobs

ROOT = Path(__file__).resolve().parents[2]


def rows(status: str, age_days: float, count: int = 1, *, now: datetime, **fields: Any) -> list[Task]:
    """`count` task rows of `status` created `age_days` before `now` (a second apart, oldest first)."""
    made = [Task(id=uuid.uuid4(), function_name="echo", status=status, pool="fast", execution_mode="sync",
                 created_at=now - timedelta(days=age_days, seconds=count - i), timeout_ms=1000, **fields)
            for i in range(count)]
    return Task.objects.bulk_create(made)


def ids(tasks: list[Task]) -> set[uuid.UUID]:
    return {task.id for task in tasks}


def remaining() -> set[uuid.UUID]:
    return set(Task.objects.values_list("id", flat=True))


# --- the policy -----------------------------------------------------------------------------------


def test_the_policy_reads_the_default_and_the_overrides_per_status(settings) -> None:
    settings.NEUTRINO_RETENTION_DAYS = 30
    settings.NEUTRINO_RETENTION_DAYS_BY_STATUS = {"failed": 90, "expired": 0, "cancelled": 30}
    policy = retention_policy()
    assert [policy.days_for(s) for s in ("completed", "failed", "cancelled", "expired")] == [30, 90, 30, 0]
    assert policy.describe() == "30 days (expired: forever; failed: 90 days)"
    now = timezone.now()
    assert policy.cutoffs(now=now) == {"completed": now - timedelta(days=30), "failed": now - timedelta(days=90),
                                       "cancelled": now - timedelta(days=30)}
    [job] = [job for job in scheduler_jobs(neutrino_settings()) if job.name == "retention"]
    assert job.every_s == 60.0


def test_keep_forever_adds_no_scheduler_job(settings) -> None:
    settings.NEUTRINO_RETENTION_DAYS = 0
    settings.NEUTRINO_RETENTION_DAYS_BY_STATUS = {}
    assert retention_policy().describe() == "forever"
    assert not retention_policy().prunes
    assert "retention" not in [job.name for job in scheduler_jobs(neutrino_settings())]
    settings.NEUTRINO_RETENTION_DAYS_BY_STATUS = {"completed": 7}
    assert retention_policy().describe() == "forever (completed: 7 days)"
    assert "retention" in [job.name for job in scheduler_jobs(neutrino_settings())]


@pytest.mark.parametrize(("name", "value", "says"), [
    ("RETENTION_DAYS", -1, "NEUTRINO_RETENTION_DAYS must be 0"),
    ("RETENTION_DAYS_BY_STATUS", {"failed": -5}, "NEUTRINO_RETENTION_DAYS_FAILED must be 0"),
    ("RETENTION_DAYS_BY_STATUS", {"running": 5}, "only finished statuses are deleted"),
    ("RETENTION_EVERY_S", 0, "NEUTRINO_RETENTION_EVERY_S must be positive"),
])
def test_a_bad_policy_is_refused_at_start(settings, name: str, value: Any, says: str) -> None:
    setattr(settings, f"NEUTRINO_{name}", value)
    with pytest.raises(ImproperlyConfigured, match=says):
        neutrino_settings()


def test_the_environment_variables_reach_the_settings(tmp_path) -> None:
    env = {**os.environ, "NEUTRINO_DATA_DIR": str(tmp_path), "NEUTRINO_RETENTION_DAYS": "0",
           "NEUTRINO_RETENTION_DAYS_FAILED": "90", "NEUTRINO_RETENTION_DAYS_EXPIRED": " 7 ",
           "NEUTRINO_RETENTION_EVERY_S": "15"}
    env.pop("NEUTRINO_RETENTION_DAYS_COMPLETED", None)
    code = ("import neutrino_site.settings as s; "
            "print(s.NEUTRINO_RETENTION_DAYS, sorted(s.NEUTRINO_RETENTION_DAYS_BY_STATUS.items()), "
            "s.NEUTRINO_RETENTION_EVERY_S)")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "0 [('expired', 7), ('failed', 90)] 15.0"  # 0 means forever, not the default


# --- pruning --------------------------------------------------------------------------------------

db = pytest.mark.django_db
POLICY = RetentionPolicy(days=30, days_by_status={"failed": 90, "expired": 0})
NO_PAUSE = PruneLimits(pause_s=0.0, max_seconds=None)


@db
def test_old_finished_rows_go_new_ones_and_active_ones_stay_whatever_their_age() -> None:
    now = timezone.now()
    old = (rows("completed", 31, 3, now=now) + rows("cancelled", 45, now=now) + rows("failed", 91, 2, now=now))
    kept = (rows("completed", 29, 2, now=now) + rows("cancelled", 1, now=now)
            + rows("failed", 60, now=now)  # older than 30 days, younger than failed's 90
            + rows("expired", 400, now=now))  # expired: kept forever
    for status in (TaskStatus.SCHEDULED, TaskStatus.PENDING, TaskStatus.QUEUED, TaskStatus.RUNNING):
        kept += rows(status, 1000, 2, now=now)

    assert tasks_past_retention(policy=POLICY, now=now) == {"completed": 3, "failed": 2, "cancelled": 1}
    report = tasks_prune(policy=POLICY, now=now, limits=NO_PAUSE)

    assert report.deleted == {"completed": 3, "failed": 2, "cancelled": 1}
    assert report.complete and report.batches == 3
    assert remaining() == ids(kept) and not ids(old) & remaining()
    assert tasks_prune(policy=POLICY, now=now, limits=NO_PAUSE).total == 0, "a second round finds nothing"


@db
def test_attempts_and_logs_go_with_their_task_and_schedule_fires_and_retries_stay_unlinked() -> None:
    now = timezone.now()
    [old] = rows("failed", 100, now=now, attempt=3)
    [young] = rows("failed", 1, now=now, attempt=2)
    [retry] = rows("completed", 1, now=now, retry_of=old)
    for task in (old, old, young):
        TaskAttempt.objects.create(task=task, attempt=1, ended_at=now, outcome=TaskAttempt.Outcome.RETRIED)
    for task, seq in ((old, 0), (old, 1), (young, 0)):
        TaskLogChunk.objects.create(task=task, attempt=1, seq=seq, written_at=now, text="a line\n")
    schedule = Schedule.objects.create(name="nightly", function_name="echo", cron="0 3 * * *",
                                       created_at=now, updated_at=now)
    fire = ScheduleFire.objects.create(schedule=schedule, slot_at=now - timedelta(days=100), fired_at=now, task=old)

    assert tasks_prune(policy=POLICY, now=now, limits=NO_PAUSE).deleted["failed"] == 1

    assert remaining() == {young.id, retry.id}
    assert list(TaskAttempt.objects.values_list("task_id", flat=True)) == [young.id]
    assert list(TaskLogChunk.objects.values_list("task_id", flat=True)) == [young.id]
    fire.refresh_from_db()
    assert fire.task_id is None, "the fire is kept: the schedule's history says the slot fired"
    retry.refresh_from_db()
    assert retry.retry_of_id is None


@db
def test_a_round_deletes_in_batches_up_to_its_cap_and_the_next_round_goes_on() -> None:
    now = timezone.now()
    old = rows("completed", 40, 25, now=now)
    kept = rows("completed", 2, 5, now=now)
    pauses: list[float] = []
    limits = PruneLimits(batch_size=10, pause_s=0.25, max_rows=20, max_seconds=None)

    first = tasks_prune(policy=POLICY, now=now, limits=limits, sleep=pauses.append)
    assert (first.total, first.batches, first.complete) == (20, 2, False)
    assert pauses == [0.25], "a pause between batches, none before the first"
    oldest_first = sorted(old, key=lambda task: task.created_at)
    assert remaining() == ids(oldest_first[20:]) | ids(kept), "the oldest go first"

    second = tasks_prune(policy=POLICY, now=now, limits=limits, sleep=pauses.append)
    assert (second.total, second.batches, second.complete) == (5, 1, True)
    assert remaining() == ids(kept)


@db
def test_a_round_out_of_time_starts_no_other_batch() -> None:
    now = timezone.now()
    rows("completed", 40, 25, now=now)
    limits = PruneLimits(batch_size=10, pause_s=0.0, max_rows=None, max_seconds=0.0)
    report = tasks_prune(policy=POLICY, now=now, limits=limits)
    assert (report.total, report.batches, report.complete) == (10, 1, False), "one batch always runs"


@db
def test_statuses_take_turns_so_a_backlog_of_one_does_not_starve_another() -> None:
    now = timezone.now()
    rows("completed", 40, 30, now=now)
    rows("cancelled", 40, 3, now=now)
    report = tasks_prune(policy=POLICY, now=now, limits=PruneLimits(batch_size=10, pause_s=0, max_rows=20,
                                                                          max_seconds=None))
    # completed 10, failed none, cancelled 3, then completed again with the 7 rows of the cap left.
    assert report.deleted == {"completed": 17, "failed": 0, "cancelled": 3}


@pytest.mark.django_db(transaction=True)
def test_two_pruners_at_once_neither_fails_and_every_row_goes_once() -> None:
    now = timezone.now()
    rows("completed", 40, 1500, now=now)
    rows("failed", 100, 500, now=now)
    kept = rows("running", 400, 10, now=now) + rows("completed", 3, 10, now=now)
    reports: list[Any] = []
    errors: list[BaseException] = []

    def prune() -> None:
        try:
            reports.append(tasks_prune(policy=POLICY, now=now,
                                       limits=PruneLimits(batch_size=100, pause_s=0.0, max_rows=None,
                                                          max_seconds=None)))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=prune) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    assert sum(report.total for report in reports) == 2000, "each row deleted by exactly one of them"
    assert remaining() == ids(kept)


def test_the_retained_statuses_are_the_finished_ones() -> None:
    from tasks_app.core.conf import RETAINED_STATUSES
    from tasks_app.models import FINISHED_STATUSES

    assert set(RETAINED_STATUSES) == {str(status) for status in FINISHED_STATUSES}
