"""Reads on schedules: the list with each one's last fire and its task's status, one schedule, its fires.

The list is one query (the last fire and its task's status are subqueries), whatever the number of
schedules; a schedule's history is a page of fires, newest slot first, each with its task's status.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import OuterRef, QuerySet, Subquery, UUIDField

from neutrino.schedules import next_runs
from tasks_app.models import Schedule, ScheduleFire, Task

MAX_FIRES_PAGE = 200


@dataclass(frozen=True)
class LastFire:
    slot_at: datetime | None
    task_id: str | None
    status: str | None  # the task's status now (None: the task row was deleted, e.g. by retention)


def _with_last_fire(qs: QuerySet[Schedule]) -> QuerySet[Schedule]:
    last = ScheduleFire.objects.filter(schedule=OuterRef("pk")).order_by("-fired_at", "-slot_at")
    status = Task.objects.filter(pk=OuterRef("last_task_id")).values("status")[:1]
    return qs.annotate(last_slot_at=Subquery(last.values("slot_at")[:1]),
                       last_task_id=Subquery(last.values("task_id")[:1], output_field=UUIDField()),
                       ).annotate(last_status=Subquery(status))


def last_fire(schedule: Schedule) -> LastFire | None:
    """The fire a `schedule_list` / `schedule_detail` row was annotated with, if it ever fired."""
    slot_at = getattr(schedule, "last_slot_at", None)
    if slot_at is None:
        return None
    task_id = getattr(schedule, "last_task_id", None)
    return LastFire(slot_at=slot_at, task_id=str(task_id) if task_id else None,
                    status=getattr(schedule, "last_status", None))


def schedule_list(*, function_name: str | None = None) -> list[Schedule]:
    """Every schedule by name, each annotated with its last fire (`last_fire(schedule)`)."""
    qs = Schedule.objects.all()
    if function_name:
        qs = qs.filter(function_name=function_name)
    return list(_with_last_fire(qs).order_by("name"))


def schedule_detail(*, name: str) -> Schedule | None:
    """One schedule with its last fire, or None."""
    return _with_last_fire(Schedule.objects.filter(name=name)).first()


def schedule_fires(*, schedule: Schedule, limit: int = 50, before: datetime | None = None) -> list[ScheduleFire]:
    """Its fires, newest slot first (`before`: older than this slot, for the next page), each with
    `.task_status` (None when the task row is gone)."""
    qs = ScheduleFire.objects.filter(schedule=schedule)
    if before is not None:
        qs = qs.filter(slot_at__lt=before)
    status = Task.objects.filter(pk=OuterRef("task_id")).values("status")[:1]
    return list(qs.annotate(task_status=Subquery(status)).order_by("-slot_at")[:max(1, min(limit, MAX_FIRES_PAGE))])


def schedule_anchor(schedule: Schedule) -> datetime:
    """Slot 0 of an interval schedule: its creation, to the second (slots are anchor + k * interval)."""
    return schedule.created_at.replace(microsecond=0)


def schedule_timing(schedule: Schedule) -> str | int:
    """What the slot functions of neutrino.schedules take: the cron expression or the interval."""
    return schedule.interval_s if schedule.interval_s is not None else schedule.cron


def schedule_next_runs(schedule: Schedule, *, n: int = 5, after: datetime | None = None) -> list[datetime]:
    """Its next `n` slots in its own time zone (empty while paused)."""
    if not schedule.enabled:
        return []
    return next_runs(schedule_timing(schedule), schedule.timezone, after=after, n=n, anchor=schedule_anchor(schedule))


def schedule_as_dict(schedule: Schedule) -> dict[str, Any]:
    """The schedule as the API shows it."""
    fire = last_fire(schedule)
    return {
        "name": schedule.name,
        "task": schedule.function_name,
        "args": schedule.args,
        "cron": schedule.cron or None,
        "interval_s": schedule.interval_s,
        "timezone": schedule.timezone,
        "enabled": schedule.enabled,
        "missed": schedule.missed,
        "catchup_max": schedule.catchup_max,
        "description": schedule.description,
        "source": schedule.source,
        "created_at": schedule.created_at,
        "updated_at": schedule.updated_at,
        "created_by": schedule.created_by,
        "paused_by": schedule.paused_by or None,
        "next_run_at": schedule.next_run_at,
        "last_fired_at": schedule.last_fired_at,
        "last_fire": None if fire is None else {"slot_at": fire.slot_at, "task_id": fire.task_id,
                                                "status": fire.status},
    }


def fire_as_dict(fire: ScheduleFire) -> dict[str, Any]:
    return {
        "slot_at": fire.slot_at,
        "fired_at": fire.fired_at,
        "reason": fire.reason,
        "task_id": str(fire.task_id) if fire.task_id else None,
        "task_status": getattr(fire, "task_status", None),
    }
