"""The schedule services on a real database and a real nats-server: validation, firing once per slot
(threads racing on one round, a clock that jumps back, an edit that moves onto fired slots), the
missed-run policies, pause / resume / run now, and the schedules declared in code."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from neutrino import Neutrino
from pools_app.models import Pool
from tasks_app.core.errors import Conflict, InvalidArguments, ScheduleNotFound
from tasks_app.models import Schedule, ScheduleFire, Task
from tasks_app.services import schedules as services

pytestmark = pytest.mark.django_db(transaction=True)

TASK = "wk_add"  # an async task of tests/fixtures/worker_tasks.py (a worker need not run: rows and messages count)


@pytest.fixture
def ports(private_nats, default_pools):
    from neutrino_site.process import http_ports

    return http_ports()


@pytest.fixture
def t0():
    return timezone.now().replace(microsecond=0) - timedelta(hours=1)


def make(name: str = "adds", *, at, **fields: Any) -> Schedule:
    return services.schedule_create(name=name, fields={"function_name": TASK, "args": {"a": 1, "b": 2}, **fields},
                                    created_by="user:test", now=at)


def fired_slots(name: str = "adds") -> list[float]:
    schedule = Schedule.objects.get(name=name)
    return sorted((f.slot_at - schedule.created_at).total_seconds() for f in ScheduleFire.objects.filter(
        schedule=schedule))


# --- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"function_name": "echo"}, "function_name", "sync task"),
    ({"function_name": "nope"}, "function_name", "no task named"),
    ({"cron": "0 25 * * *", "interval_s": None}, "cron", "hour field"),
    ({"interval_s": 60, "cron": "@daily"}, "cron", "not both"),
    ({"interval_s": 0}, "interval_s", "interval_s"),
    ({"interval_s": 60, "timezone": "Europe/Nowhere"}, "timezone", "IANA"),
    ({"interval_s": 60, "missed": "sometimes"}, "missed", "skip, once, all"),
    ({"interval_s": 60, "args": {"a": "x", "b": 2}}, "args", "a:"),
    ({"interval_s": 60, "args": {"a": 1}}, "args", "b:"),
])
def test_a_bad_schedule_is_a_422_naming_its_field(fields: dict, field: str, words: str) -> None:
    body = {"function_name": TASK, "args": {"a": 1, "b": 2}, **fields}
    with pytest.raises(InvalidArguments) as caught:
        services.schedule_create(name="bad", fields=body, created_by="user:test")
    assert caught.value.details["field"] == field
    assert words in caught.value.message
    assert not Schedule.objects.exists()


def test_names_are_unique_and_url_safe(t0) -> None:
    make(at=t0, interval_s=60)
    with pytest.raises(Conflict):
        make(at=t0, interval_s=60)
    with pytest.raises(InvalidArguments) as caught:
        make("has space", at=t0, interval_s=60)
    assert caught.value.details["field"] == "name"


# --- firing ----------------------------------------------------------------------------------------


def test_due_slots_fire_once_each_and_their_tasks_are_queued(ports, private_nats, t0) -> None:
    make(at=t0, interval_s=1)
    assert services.schedules_fire_due(ports=ports, now=t0 + timedelta(seconds=3.5)) == 3
    assert services.schedules_fire_due(ports=ports, now=t0 + timedelta(seconds=3.5)) == 0
    assert fired_slots() == [1.0, 2.0, 3.0]
    tasks = Task.objects.filter(created_by="schedule:adds")
    assert tasks.count() == 3 and {t.args["a"] for t in tasks} == {1}
    assert {t.id for t in tasks} == set(ScheduleFire.objects.values_list("task_id", flat=True))
    ports.ledger.flush()
    assert set(Task.objects.values_list("status", flat=True)) == {"queued"}
    assert private_nats.stream_messages() == 3
    schedule = Schedule.objects.get(name="adds")
    assert schedule.next_run_at == t0 + timedelta(seconds=4) and schedule.last_fired_at is not None


def test_schedulers_racing_on_one_round_fire_each_slot_once(ports, t0) -> None:
    make(at=t0, interval_s=1)
    now = t0 + timedelta(seconds=5.5)
    start = threading.Barrier(4)
    counts: list[int] = []

    def one_scheduler() -> None:
        from django.db import connection

        start.wait(10)
        try:
            counts.append(services.schedules_fire_due(ports=ports, now=now))
        finally:
            connection.close()

    threads = [threading.Thread(target=one_scheduler) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(counts) == [0, 0, 0, 5]
    assert fired_slots() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert Task.objects.count() == 5


def test_a_clock_that_jumps_back_fires_nothing_again(ports, t0) -> None:
    make(at=t0, interval_s=1)
    services.schedules_fire_due(ports=ports, now=t0 + timedelta(seconds=3.5))
    # The clock goes back two seconds: slots 2 and 3 "come" again, but next_run_at is 4 s: nothing is due.
    assert services.schedules_fire_due(ports=ports, now=t0 + timedelta(seconds=1.5)) == 0
    # Even with next_run_at moved back onto fired slots (an edit, a restored backup), their rows keep them fired.
    Schedule.objects.filter(name="adds").update(next_run_at=t0 + timedelta(seconds=2))
    assert services.schedules_fire_due(ports=ports, now=t0 + timedelta(seconds=4.5)) == 1
    assert fired_slots() == [1.0, 2.0, 3.0, 4.0]
    assert Task.objects.count() == 4  # the refused slots' task rows rolled back with them


@pytest.mark.parametrize(("missed", "late"), [("skip", []), ("once", [90.0]), ("all", [86.0, 87.0, 88.0, 89.0, 90.0])])
def test_slots_missed_while_no_scheduler_ran_follow_the_policy(ports, t0, missed: str, late: list[float]) -> None:
    make(at=t0, interval_s=1, missed=missed, catchup_max=5)
    # No scheduler from 1 s to 100.5 s: slots 91..100 are within the 10 s grace, 1..90 were missed.
    assert services.schedules_fire_due(ports=ports, now=t0 + timedelta(seconds=100.5)) == len(late) + 10
    assert fired_slots() == late + [float(s) for s in range(91, 101)]
    late_reasons = ScheduleFire.objects.filter(slot_at__lt=t0 + timedelta(seconds=91)).values_list("reason", flat=True)
    assert set(late_reasons) == ({"missed"} if late else set())


def test_a_cron_schedule_fires_at_its_minute(ports) -> None:
    now = timezone.now()
    schedule = services.schedule_create(name="minutely", fields={"function_name": TASK, "args": {"a": 1, "b": 1},
                                                                 "cron": "* * * * *", "timezone": "Asia/Kolkata"},
                                        created_by="user:test", now=now - timedelta(minutes=1))
    assert schedule.next_run_at is not None and schedule.next_run_at.second == 0
    assert services.schedules_fire_due(ports=ports, now=schedule.next_run_at + timedelta(seconds=1)) == 1
    assert ScheduleFire.objects.get().slot_at == schedule.next_run_at


def test_paused_schedules_do_not_fire_and_resume_from_the_next_slot(ports, t0) -> None:
    make(at=t0, interval_s=1)
    paused = services.schedule_pause(name="adds", by="user:ada")
    assert not paused.enabled and paused.next_run_at is None and paused.paused_by == "user:ada"
    assert services.schedules_fire_due(ports=ports, now=timezone.now()) == 0
    resumed = services.schedule_resume(name="adds")
    assert resumed.enabled and resumed.paused_by == ""
    assert resumed.next_run_at is not None and resumed.next_run_at > timezone.now() - timedelta(seconds=1)
    assert not ScheduleFire.objects.exists()  # the pause's slots are not made up


def test_run_now_fires_a_manual_task_even_when_paused(ports, t0) -> None:
    make(at=t0, interval_s=3600)
    services.schedule_pause(name="adds", by="user:ada")
    fire = services.schedule_run_now(ports=ports, name="adds", by="user:ada")
    assert fire.reason == "manual" and fire.task_id is not None
    ports.ledger.flush()
    assert Task.objects.get(id=fire.task_id).status == "queued"
    assert Schedule.objects.get(name="adds").next_run_at is None
    with pytest.raises(ScheduleNotFound):
        services.schedule_run_now(ports=ports, name="nope", by="user:ada")


def test_a_pool_that_takes_no_tasks_fails_the_fired_task_with_the_reason(ports, t0) -> None:
    make(at=t0, interval_s=1)
    Pool.objects.filter(name="async").update(enabled=False)
    from pools_app.selectors import forget_cached_pools

    forget_cached_pools()
    assert services.schedules_fire_due(ports=ports, now=t0 + timedelta(seconds=1.5)) == 1
    task = Task.objects.get()
    assert task.status == "failed" and "pool async is disabled" in task.error


def test_update_keeps_next_run_unless_the_timing_changes(t0) -> None:
    make(at=t0, interval_s=60)
    before = Schedule.objects.get().next_run_at
    updated = services.schedule_update(name="adds", changes={"args": {"a": 5, "b": 6}, "description": "x"},
                                       by="user:ada", now=t0 + timedelta(seconds=30))
    assert updated.next_run_at == before and updated.args == {"a": 5, "b": 6}
    retimed = services.schedule_update(name="adds", changes={"cron": "0 * * * *"}, by="user:ada",
                                       now=t0 + timedelta(seconds=30))
    assert retimed.interval_s is None and retimed.next_run_at is not None
    assert retimed.next_run_at.minute == 0 and retimed.next_run_at > t0
    with pytest.raises(InvalidArguments) as caught:
        services.schedule_update(name="adds", changes={"source": "code"}, by="user:ada")
    assert caught.value.details["field"] == "source"


# --- schedules declared in code ----------------------------------------------------------------------


def code_app(schedule: Any) -> dict:
    app = Neutrino(f"code-{id(schedule)}")

    @app.task(execution_mode="async", schedule=schedule)
    def wk_add(a: int = 1, b: int = 2) -> int:
        """Adds, on a schedule."""
        return a + b

    return app.tasks


def test_code_schedules_are_created_updated_paused_and_resumed_with_the_code(t0) -> None:
    report = services.schedules_sync_code(specs=code_app("*/5 * * * *"), now=t0)
    assert report.created == ["wk_add"]
    schedule = Schedule.objects.get(name="wk_add")
    assert schedule.source == "code" and schedule.cron == "*/5 * * * *"
    assert schedule.description == "Adds, on a schedule."
    first_next = schedule.next_run_at
    # The same code again (a restart): nothing changes, next_run_at kept (so no slot is skipped).
    assert services.schedules_sync_code(specs=code_app("*/5 * * * *"), now=t0 + timedelta(hours=1)).updated == []
    assert Schedule.objects.get(name="wk_add").next_run_at == first_next
    # The expression changed in code.
    assert services.schedules_sync_code(specs=code_app("@hourly"), now=t0).updated == ["wk_add"]
    assert Schedule.objects.get(name="wk_add").cron == "0 * * * *"
    # The decorator is gone: paused, not deleted; back: resumed.
    assert services.schedules_sync_code(specs={}, now=t0).paused == ["wk_add"]
    gone = Schedule.objects.get(name="wk_add")
    assert not gone.enabled and gone.paused_by == Schedule.CODE_GONE
    services.schedules_sync_code(specs=code_app("@hourly"), now=t0)
    assert Schedule.objects.get(name="wk_add").enabled
    # A person's pause survives a restart.
    services.schedule_pause(name="wk_add", by="user:ada")
    services.schedules_sync_code(specs=code_app("@hourly"), now=t0)
    assert not Schedule.objects.get(name="wk_add").enabled


def test_a_person_s_schedule_with_the_task_s_name_is_left_alone(t0) -> None:
    make("wk_add", at=t0, interval_s=60)
    report = services.schedules_sync_code(specs=code_app("@daily"), now=t0)
    assert report.left == ["wk_add"] and report.created == []
    assert Schedule.objects.get(name="wk_add").interval_s == 60
