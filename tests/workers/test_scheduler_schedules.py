"""Exactly one fire per slot with real `neutrino scheduler` processes: three at once on an every-second
schedule, and one killed with SIGKILL mid-run then started again. A real nats-server, this test's
database, and a worker of the async pool running the fired tasks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from tasks_app.models import Schedule, ScheduleFire, Task
from tasks_app.services.schedules import schedule_create
from tests.conftest import _worker_database_env
from tests.servers import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]


class Scheduler:
    """`neutrino scheduler` as a subprocess, its output in a log file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "neutrino_site.cli", "scheduler"], env=env,
                                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def ready(self) -> bool:
        assert self.process.poll() is None, f"scheduler exited with {self.process.returncode}:\n{self.log()}"
        return "jobs: schedules every" in self.log()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def start_scheduler(live_nats, tmp_path) -> Iterator:
    env = {**os.environ, **_worker_database_env(), "NEUTRINO_NATS_URL": live_nats.url, "NEUTRINO_LOG_LEVEL": "INFO",
           "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get(
               "PYTHONPATH", "")) if p)}
    started: list[Scheduler] = []

    def start(index: int, **extra: str) -> Scheduler:
        scheduler = Scheduler({**env, **extra}, tmp_path / f"scheduler-{index}.log")
        started.append(scheduler)
        return scheduler

    yield start
    for scheduler in started:
        scheduler.stop()
    for index, scheduler in enumerate(started):
        print(f"----- scheduler {index} (pid {scheduler.process.pid}, exit {scheduler.process.returncode}) -----\n"
              f"{scheduler.log()[-5000:]}")


def every_second(name: str) -> Schedule:
    return schedule_create(name=name, fields={"function_name": "wk_add", "args": {"a": 1, "b": 1}, "interval_s": 1,
                                              "missed": "all", "catchup_max": 100}, created_by="user:test")


def slots_of(schedule: Schedule) -> list[int]:
    """The schedule's fired slots, as seconds after its anchor, in order (one entry per fire row)."""
    anchor = schedule.created_at.replace(microsecond=0)
    return [round((slot - anchor).total_seconds())
            for slot in ScheduleFire.objects.filter(schedule=schedule).order_by("slot_at").values_list("slot_at",
                                                                                                     flat=True)]


def assert_each_slot_once(schedule: Schedule) -> list[int]:
    slots = slots_of(schedule)
    assert slots, "nothing fired"
    assert len(slots) == len(set(slots)), f"a slot fired twice: {slots}"
    assert slots == list(range(slots[0], slots[-1] + 1)), f"a slot was skipped: {slots}"
    tasks = Task.objects.filter(created_by=f"schedule:{schedule.name}")
    assert tasks.count() == len(slots), "a fire without its task, or a task without its fire"
    assert set(tasks.values_list("id", flat=True)) == set(
        ScheduleFire.objects.filter(schedule=schedule).values_list("task_id", flat=True))
    return slots


def test_three_schedulers_fire_each_slot_of_an_every_second_schedule_once(default_pools, start_worker,
                                                                          start_scheduler) -> None:
    start_worker("async", concurrency=4)
    schedulers = [start_scheduler(index) for index in range(3)]
    wait_for(lambda: all(s.ready() for s in schedulers), timeout_s=60, what="three schedulers ready")
    schedule = every_second("every-second")
    wait_for(lambda: len(slots_of(schedule)) >= 10, timeout_s=60, what="ten slots fired")
    time.sleep(1.0)  # a few more rounds with all three racing
    for scheduler in schedulers:
        assert scheduler.process.poll() is None, scheduler.log()
        scheduler.stop()
    slots = assert_each_slot_once(schedule)
    assert len(slots) >= 10
    late_ms = sorted((fire.fired_at - fire.slot_at).total_seconds() * 1000
                     for fire in ScheduleFire.objects.filter(schedule=schedule))
    print(f"{len(slots)} slots fired once each by 3 schedulers; fired after the slot: "
          f"p50 {late_ms[len(late_ms) // 2]:.0f} ms, max {late_ms[-1]:.0f} ms")
    # The worker ran every fired task, once.
    wait_for(lambda: not Task.objects.filter(created_by="schedule:every-second").exclude(status="completed").exists(),
             timeout_s=60, what="every fired task completed")
    assert set(Task.objects.filter(created_by="schedule:every-second").values_list("result", flat=True)) == {2}


def test_a_scheduler_killed_mid_run_and_started_again_neither_repeats_nor_skips(default_pools, start_worker,
                                                                                start_scheduler) -> None:
    start_worker("async", concurrency=4)
    first = start_scheduler(0)
    wait_for(first.ready, timeout_s=60, what="scheduler ready")
    schedule = every_second("killed")
    wait_for(lambda: len(slots_of(schedule)) >= 3, timeout_s=60, what="three slots fired")
    first.kill()
    killed_at = timezone.now()
    fired_before = len(slots_of(schedule))
    time.sleep(3.0)  # slots pass with no scheduler: missed="all" fires them when one is back
    second = start_scheduler(1)
    # Four: the gap's three slots may all be fired at once by the catch-up, and one more is a live slot.
    wait_for(lambda: ScheduleFire.objects.filter(schedule=schedule, fired_at__gt=killed_at + timedelta(seconds=3))
             .count() >= 4, timeout_s=60, what="the restarted scheduler firing")
    second.stop()
    slots = assert_each_slot_once(schedule)
    assert len(slots) > fired_before + 3
    missed = ScheduleFire.objects.filter(schedule=schedule, reason="missed").count()
    late = ScheduleFire.objects.filter(schedule=schedule, fired_at__gt=killed_at).count()
    assert late >= 3, "the slots of the gap were fired after the restart"
    print(f"slots {slots[0]}..{slots[-1]}: {len(slots)} fires, {missed} as missed (late past the grace)")


def test_a_schedule_declared_in_code_is_created_at_start_and_paused_when_its_decorator_is_gone(
        default_pools, start_scheduler) -> None:
    # tests.settings fixes the task modules; the project's settings read them from the environment.
    modules = os.environ["NEUTRINO_TASK_MODULES"] + ",tests.fixtures.schedule_tasks"
    with_code = start_scheduler(0, DJANGO_SETTINGS_MODULE="neutrino_site.settings", NEUTRINO_TASK_MODULES=modules)
    wait_for(with_code.ready, timeout_s=60, what="scheduler ready")
    schedule = Schedule.objects.get(name="sc_tick")
    assert schedule.source == "code" and schedule.interval_s == 1 and schedule.args == {"n": 3}
    assert schedule.missed == "once" and schedule.description == "declared in code"
    wait_for(lambda: ScheduleFire.objects.filter(schedule=schedule).exists(), timeout_s=30, what="a fire")
    with_code.stop()
    # The same deployment without the module: the schedule is paused, not deleted, and fires no more.
    without = start_scheduler(1)
    wait_for(without.ready, timeout_s=60, what="scheduler ready")
    paused = Schedule.objects.get(name="sc_tick")
    assert not paused.enabled and paused.paused_by == Schedule.CODE_GONE
    assert "schedules declared in code: paused sc_tick" in without.log()
    fires = ScheduleFire.objects.filter(schedule=schedule).count()
    time.sleep(2.0)
    assert ScheduleFire.objects.filter(schedule=schedule).count() == fires
