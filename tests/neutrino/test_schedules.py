"""The SDK's schedules: cron parsing and its messages, @-names, time zones and DST, interval slots, the
missed-run policies, and `@app.task(schedule=...)` refusing what cannot work when it runs."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from neutrino import Neutrino, Schedule, TaskDefinitionError
from neutrino.schedules import (
    CRON_ALIASES,
    GRACE_S,
    ScheduleError,
    due_slots,
    next_runs,
    normalize_cron,
    schedule_of,
    slots_before,
)

NEW_YORK = ZoneInfo("America/New_York")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("name", "expanded"), sorted(CRON_ALIASES.items()))
def test_every_at_name_expands_to_its_five_fields(name: str, expanded: str) -> None:
    assert normalize_cron(name) == expanded
    assert normalize_cron(name.upper()) == expanded


@pytest.mark.parametrize(("expr", "words"), [
    ("* * *", ["3 field(s)", "needs 5"]),
    ("0 * * * * *", ["6 field(s)", "interval_s"]),
    ("61 * * * *", ["minute field '61'", "0-59"]),
    ("0 24 * * *", ["hour field '24'", "0-23"]),
    ("0 0 32 * *", ["day of month field '32'"]),
    ("0 0 * 13 *", ["month field '13'"]),
    ("0 0 * * MOO", ["day of week field 'MOO'"]),
    ("@fortnightly", ["unknown cron name", "@daily"]),
    ("", ["empty"]),
    ("0 0 30 2 *", ["never matches"]),
])
def test_a_bad_expression_is_refused_naming_what_is_wrong(expr: str, words: list[str]) -> None:
    with pytest.raises(ScheduleError) as caught:
        normalize_cron(expr)
    assert caught.value.field == "cron"
    for word in words:
        assert word in caught.value.message


def test_next_runs_of_a_cron_expression_in_a_zone() -> None:
    runs = next_runs("*/15 9-10 * * MON-FRI", "Europe/Paris", after=datetime(2026, 3, 6, 9, 50, tzinfo=UTC), n=3)
    assert [r.isoformat() for r in runs] == [
        "2026-03-09T09:00:00+01:00", "2026-03-09T09:15:00+01:00", "2026-03-09T09:30:00+01:00"]


def test_spring_forward_a_0230_job_runs_once_at_0300_and_fall_back_once() -> None:
    # 2026-03-08: New York skips 02:00-03:00. Debian's cron runs the 02:30 job at 03:00, once.
    runs = next_runs("30 2 * * *", "America/New_York", after=datetime(2026, 3, 7, 12, tzinfo=NEW_YORK), n=3)
    assert [r.isoformat() for r in runs] == [
        "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00", "2026-03-10T02:30:00-04:00"]
    # 2026-11-01: 01:00-02:00 happens twice; the 01:30 job runs at the first 01:30 only.
    runs = next_runs("30 1 * * *", "America/New_York", after=datetime(2026, 10, 31, 12, tzinfo=NEW_YORK), n=2)
    assert [r.isoformat() for r in runs] == ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    # An expression with * in the hour field follows real time: every 15 minutes through the repeated hour.
    runs = next_runs("*/15 * * * *", "America/New_York", after=datetime(2026, 11, 1, 0, 50, tzinfo=NEW_YORK), n=9)
    utc = [run.astimezone(UTC) for run in runs]  # aware datetimes of one zone subtract as wall clocks
    gaps = {(b - a) for a, b in itertools.pairwise(utc)}
    assert gaps == {timedelta(minutes=15)}


def test_interval_slots_are_anchored_so_a_late_start_does_not_drift() -> None:
    anchor = T0
    late = T0 + timedelta(seconds=95.7)  # asked 95.7 s in: slots stay on the anchor's 30 s grid
    assert [r.astimezone(UTC) for r in next_runs(30, "UTC", after=late, n=3, anchor=anchor)] == [
        T0 + timedelta(seconds=120), T0 + timedelta(seconds=150), T0 + timedelta(seconds=180)]


def test_a_bad_zone_or_interval_is_refused() -> None:
    with pytest.raises(ScheduleError) as caught:
        next_runs("@daily", "Mars/Olympus")
    assert caught.value.field == "timezone" and "IANA" in caught.value.message
    with pytest.raises(ScheduleError) as caught:
        next_runs(0, "UTC")
    assert caught.value.field == "interval_s"


def test_slots_before_walks_back_a_bounded_number_of_slots() -> None:
    ten_years = T0 - timedelta(days=3650)
    found = slots_before("* * * * *", "UTC", end=T0, not_before=ten_years, limit=3)
    assert found == [T0, T0 - timedelta(minutes=1), T0 - timedelta(minutes=2)]


@pytest.mark.parametrize(("missed", "late_fired"), [("skip", 0), ("once", 1), ("all", 5)])
def test_missed_runs_policies(missed: str, late_fired: int) -> None:
    # Every 10 s, next due at T0, scheduler back 120 s later: 12 slots passed, the one at 120 s on time.
    now = T0 + timedelta(seconds=120.2)
    plan = due_slots(10, "UTC", due_since=T0 + timedelta(seconds=10), now=now, missed=missed, catchup_max=5,
                     anchor=T0)
    late = [slot for slot, reason in plan.slots if reason == "missed"]
    on_time = [slot for slot, reason in plan.slots if reason == "slot"]
    assert on_time == [T0 + timedelta(seconds=120)]  # within GRACE_S: fired whatever the policy
    assert len(late) == late_fired
    # The latest missed slots, oldest first, just before the on-time ones.
    assert late == sorted(late) and all(s < now - timedelta(seconds=GRACE_S) for s in late)
    if late:
        assert late[-1] == T0 + timedelta(seconds=110)
    assert plan.next_run_at == T0 + timedelta(seconds=130)


def test_a_round_on_time_fires_each_slot_since_next_run_at() -> None:
    plan = due_slots(1, "UTC", due_since=T0 + timedelta(seconds=5), now=T0 + timedelta(seconds=7.5),
                     missed="skip", catchup_max=10, anchor=T0)
    assert plan.slots == [(T0 + timedelta(seconds=s), "slot") for s in (5, 6, 7)]
    assert plan.next_run_at == T0 + timedelta(seconds=8)


# --- the decorator ---------------------------------------------------------------------------------


def test_the_decorator_takes_a_string_a_dict_or_a_schedule() -> None:
    app = Neutrino("sched-sdk")

    @app.task(execution_mode="async", schedule="@hourly")
    def every_hour() -> None: ...

    @app.task(execution_mode="async", schedule={"interval_s": 30, "args": {"x": 2}, "missed": "all"})
    def every_30s(x: int) -> int:
        return x

    @app.task(execution_mode="gpu", schedule=Schedule(cron="0 3 * * *", timezone="Europe/Paris", missed="once"))
    def nightly() -> None: ...

    assert app.tasks["every_hour"].schedule == Schedule(cron="0 * * * *")
    assert app.tasks["every_30s"].schedule == Schedule(interval_s=30, args={"x": 2}, missed="all")
    schedule = app.tasks["nightly"].schedule
    assert schedule is not None and schedule.timezone == "Europe/Paris" and schedule.timing == "0 3 * * *"
    assert every_30s(4) == 4  # still the plain function


@pytest.mark.parametrize(("options", "words"), [
    ({"execution_mode": "async", "schedule": "*/5 * *"}, ["bad schedule", "needs 5"]),
    ({"execution_mode": "async", "schedule": {"cron": "@daily", "timezone": "Nowhere/City"}}, ["time zone"]),
    ({"execution_mode": "async", "schedule": {"cron": "@daily", "interval_s": 5}}, ["not both"]),
    ({"execution_mode": "async", "schedule": {"every": 5}}, ["unknown schedule field"]),
    ({"execution_mode": "async", "schedule": {"cron": "@daily", "args": {"n": "x"}}}, ["args do not fit"]),
    ({"schedule": "@daily"}, ["only async and gpu tasks"]),
])
def test_the_decorator_refuses_a_schedule_that_cannot_work(options: dict, words: list[str]) -> None:
    app = Neutrino("sched-bad")
    with pytest.raises(TaskDefinitionError) as caught:
        @app.task(**options)
        def job(n: int = 1) -> int:
            return n
    for word in words:
        assert word in str(caught.value)


def test_schedule_of_refuses_other_types() -> None:
    with pytest.raises(ScheduleError):
        schedule_of(5)  # type: ignore[arg-type]
