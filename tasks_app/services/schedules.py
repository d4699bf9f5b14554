"""Writes on schedules: create, update, pause, resume, delete, run now, fire the due ones, and keep the
schedules declared in code (`@app.task(schedule=...)`) in step with the code.

Every way in (the API, the dashboard, the Django admin, the code) validates through `schedule_check`,
so a bad expression, zone or argument is the same 422 naming the same field everywhere.

Exactly one fire per slot, however many schedulers run: `schedules_fire_due` claims a schedule's round
with a conditional UPDATE of its `next_run_at` (from the value it read to the next slot), and inserts the
round's `ScheduleFire` rows and their pending task rows in the same transaction. A second scheduler that
read the same `next_run_at` updates nothing and fires nothing; a scheduler killed in the middle rolls the
whole round back, so the next one fires those slots again, once. The unique (schedule, slot_at) pair
backs this up: a slot that already has its row (a clock that jumped back, an edit that moved next_run_at
onto a fired slot) is skipped. Tasks are published after the commit through the one queueing path
(`tasks_app.services.submit`); a publish that fails leaves the row pending for the pool's sweeper.

Clocks. A slot is keyed by its time, never by "the round after the last one": a clock that jumps back
makes `now` earlier than `next_run_at`, so nothing is due until real time reaches it again, and a slot
already fired keeps its row, so it cannot fire twice. A clock that jumps forward makes the slots in
between late: the missed-run policy treats them as a scheduler that was down that long.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from neutrino.app import TaskSpec
from neutrino.schedules import (
    ScheduleError,
    check_catchup_max,
    check_missed,
    check_timezone,
    check_timing,
    due_slots,
    slots_between,
)
from tasks_app.core.errors import Conflict, InvalidArguments, ScheduleNotFound, TaskNotFound
from tasks_app.core.ports import Ports
from tasks_app.core.registry import registered_tasks, task_spec
from tasks_app.models import Schedule, ScheduleFire, Task, TaskCreator
from tasks_app.selectors.schedules import schedule_anchor, schedule_timing
from tasks_app.services.audit import Actor, audit_record_if, snapshot
from tasks_app.services.submit import task_insert_pending, task_queue_inserted
from tasks_app.services.tasks import task_validate_args

logger = logging.getLogger("neutrino.schedules")

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
DESCRIPTION_MAX = 300
RESERVED_NAMES = frozenset({"new", "preview"})  # ui/schedules/new, ui/schedules/preview
FIRE_BATCH = 100  # schedules fired per round at most; the rest are next round's (every 0.5 s)
EDITABLE = ("function_name", "args", "cron", "interval_s", "timezone", "enabled", "missed", "catchup_max",
            "description")
TIMING = ("cron", "interval_s", "timezone")
CODE_CREATOR = "code"


def _invalid(message: str, field: str) -> InvalidArguments:
    return InvalidArguments(message, field=field, fields=[{"field": field, "message": message}])


# --- validation ----------------------------------------------------------------------------------


def schedule_spec(function_name: str, spec: TaskSpec | None = None) -> TaskSpec:
    """The task a schedule fires (`spec`, or the registered one): queued, since sync tasks are refused (nobody
    waits on them)."""
    try:
        spec = spec or task_spec(function_name)
    except TaskNotFound as exc:
        raise _invalid(exc.message, "function_name")
    if not spec.runs_on_nats:
        raise _invalid(
            f"{spec.name} is a sync task: a schedule queues its task to a worker pool, and a sync task only runs "
            "inside an HTTP call that waits for it; make the task async (execution_mode='async') to schedule it",
            "function_name")
    return spec


def schedule_check(fields: Mapping[str, Any], *, spec: TaskSpec | None = None) -> dict[str, Any]:
    """The editable fields (EDITABLE), validated and normalized (against `spec`, else the registered task of
    that name). Raises InvalidArguments (422) naming the field."""
    spec = schedule_spec(str(fields.get("function_name") or ""), spec)
    try:
        args = task_validate_args(spec=spec, args=fields.get("args", {}))
    except InvalidArguments as exc:
        named = [{**f, "field": f"args.{f['field']}" if f["field"] != "args" else "args"}
                 for f in exc.details.get("fields", [])]
        raise InvalidArguments(exc.message, field="args", fields=named)
    try:
        cron, interval_s = check_timing(fields.get("cron") or "", fields.get("interval_s"))
        zone = check_timezone(str(fields.get("timezone") or "UTC"))
        missed = check_missed(fields.get("missed", "skip"))
        catchup_max = check_catchup_max(fields.get("catchup_max", 10))
    except ScheduleError as exc:
        raise _invalid(exc.message, exc.field)
    description = fields.get("description", "") or ""
    if not isinstance(description, str) or len(description) > DESCRIPTION_MAX:
        raise _invalid(f"description is a string of at most {DESCRIPTION_MAX} characters", "description")
    enabled = fields.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _invalid("enabled is true or false", "enabled")
    return {"function_name": spec.name, "args": args, "cron": cron, "interval_s": interval_s, "timezone": zone.key,
            "enabled": enabled, "missed": missed, "catchup_max": catchup_max, "description": description}


def check_name(name: Any) -> str:
    if name in RESERVED_NAMES:
        raise _invalid(f"{name!r} is a word the dashboard's URLs use; pick another name", "name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise _invalid(f"a schedule name is 1 to 100 letters, digits, '_', '.' or '-' (starting with a letter or "
                       f"digit), not {name!r}", "name")
    return name


# --- slots ---------------------------------------------------------------------------------------


def next_slot(schedule: Schedule, *, after: datetime) -> datetime:
    """The schedule's first slot strictly after `after`."""
    found = slots_between(schedule_timing(schedule), schedule.timezone, start=after + timedelta(microseconds=1),
                          end=datetime.max.replace(tzinfo=UTC), anchor=schedule_anchor(schedule), limit=1)
    return found[0]


# --- create, update, pause, resume, delete -------------------------------------------------------


def schedule_get(*, name: str) -> Schedule:
    schedule = Schedule.objects.filter(name=name).first()
    if schedule is None:
        raise ScheduleNotFound(f"no schedule named {name!r}", name=name)
    return schedule


def schedule_create(*, name: str, fields: Mapping[str, Any], created_by: str,
                    source: str = Schedule.Source.USER, now: datetime | None = None,
                    spec: TaskSpec | None = None, actor: Actor | None = None) -> Schedule:
    """A new schedule (Conflict 409 when the name is taken). Its first slot is the next one after now.
    With an `actor` (a person's change), an audit record says who made it."""
    now = now or timezone.now()
    checked = schedule_check(fields, spec=spec)
    schedule = Schedule(name=check_name(name), **checked, source=source, created_by=created_by,
                        created_at=now, updated_at=now)
    schedule.next_run_at = next_slot(schedule, after=now) if schedule.enabled else None
    schedule.paused_by = "" if schedule.enabled else created_by
    try:
        with transaction.atomic():
            schedule.save(force_insert=True)
    except IntegrityError:
        raise Conflict(f"a schedule named {name!r} exists already; pick another name or change that one",
                       name=name)
    audit_record_if(actor, action="schedule.create", object_type="schedule", object_id=schedule.name,
                    after=snapshot(schedule))
    return schedule


def schedule_update(*, name: str, changes: Mapping[str, Any], by: str, now: datetime | None = None,
                    spec: TaskSpec | None = None, actor: Actor | None = None) -> Schedule:
    """Change some of a schedule's fields (EDITABLE). A new expression, interval or zone (or enabling it)
    starts from the next slot after now; other changes keep next_run_at, so no slot is skipped."""
    now = now or timezone.now()
    unknown = sorted(set(changes) - set(EDITABLE))
    if unknown:
        raise _invalid(f"unknown or read-only field(s) {', '.join(unknown)}; editable: {', '.join(EDITABLE)}",
                       unknown[0])
    schedule = schedule_get(name=name)
    before = snapshot(schedule)
    current = {field: getattr(schedule, field) for field in EDITABLE}
    merged = {**current, **changes}
    if "cron" in changes and changes["cron"] and "interval_s" not in changes:
        merged["interval_s"] = None  # switching to cron
    if changes.get("interval_s") is not None and "cron" not in changes:
        merged["cron"] = ""
    checked = schedule_check(merged, spec=spec)
    retimed = any(checked[field] != current[field] for field in TIMING)
    for field, value in checked.items():
        setattr(schedule, field, value)
    if not schedule.enabled:
        schedule.next_run_at = None
        schedule.paused_by = schedule.paused_by or by
    elif retimed or not current["enabled"] or schedule.next_run_at is None:
        schedule.next_run_at = next_slot(schedule, after=now)
        schedule.paused_by = ""
    schedule.updated_at = now
    schedule.save()
    audit_record_if(actor, action="schedule.update", object_type="schedule", object_id=schedule.name,
                    before=before, after=snapshot(schedule))
    return schedule


def schedule_pause(*, name: str, by: str, actor: Actor | None = None) -> Schedule:
    """Stop firing until resumed (slots meanwhile are not fired later). Pausing a paused schedule is fine."""
    schedule = schedule_get(name=name)
    audit_record_if(actor, action="schedule.pause", object_type="schedule", object_id=name,
                    before={"enabled": schedule.enabled}, after={"enabled": False})
    Schedule.objects.filter(id=schedule.id, enabled=True).update(enabled=False, next_run_at=None, paused_by=by,
                                                                 updated_at=timezone.now())
    schedule.refresh_from_db()
    return schedule


def schedule_resume(*, name: str, now: datetime | None = None, actor: Actor | None = None) -> Schedule:
    """Fire again from the next slot after now (the slots of the pause are not made up)."""
    now = now or timezone.now()
    schedule = schedule_get(name=name)
    audit_record_if(actor, action="schedule.resume", object_type="schedule", object_id=name,
                    before={"enabled": schedule.enabled}, after={"enabled": True})
    Schedule.objects.filter(id=schedule.id, enabled=False).update(
        enabled=True, next_run_at=next_slot(schedule, after=now), paused_by="", updated_at=now)
    schedule.refresh_from_db()
    return schedule


def schedule_delete(*, name: str, actor: Actor | None = None) -> None:
    """Delete it and its fire history (the tasks it made stay). A code schedule comes back at the next
    scheduler start while its decorator is there: remove the decorator, or pause it instead."""
    schedule = schedule_get(name=name)
    audit_record_if(actor, action="schedule.delete", object_type="schedule", object_id=name,
                    before=snapshot(schedule))
    schedule.delete()


# --- firing --------------------------------------------------------------------------------------


def schedule_creator(schedule: Schedule) -> TaskCreator:
    return TaskCreator(label=f"schedule:{schedule.name}")


def schedule_run_now(*, ports: Ports, name: str, by: str, actor: Actor | None = None) -> ScheduleFire:
    """Fire the schedule's task once, now, paused or not (reason "manual"); next_run_at does not move."""
    schedule = schedule_get(name=name)
    spec = schedule_spec(schedule.function_name)
    now = timezone.now()
    with transaction.atomic():
        task = task_insert_pending(spec=spec, args=dict(schedule.args), creator=schedule_creator(schedule))
        fire = ScheduleFire.objects.create(schedule=schedule, slot_at=now, fired_at=now, task_id=task.id,
                                           reason="manual")
        Schedule.objects.filter(id=schedule.id).update(last_fired_at=now)
    logger.info("schedule %s run now by %s: task %s", name, by, task.id)
    audit_record_if(actor, action="schedule.run_now", object_type="schedule", object_id=name,
                    after={"task_id": str(task.id)})
    task_queue_inserted(ports=ports, spec=spec, tasks=[task])
    return fire


def schedules_fire_due(*, ports: Ports, now: datetime | None = None, limit: int = FIRE_BATCH) -> int:
    """Fire every enabled schedule whose next_run_at has come (the scheduler's job); returns tasks fired."""
    now = now or timezone.now()
    due = list(Schedule.objects.filter(enabled=True, next_run_at__lte=now).order_by("next_run_at")[:limit])
    return sum(_fire(ports, schedule, now) for schedule in due)


def _fire(ports: Ports, schedule: Schedule, now: datetime) -> int:
    assert schedule.next_run_at is not None  # filtered on it
    plan = due_slots(schedule_timing(schedule), schedule.timezone, due_since=schedule.next_run_at, now=now,
                     missed=schedule.missed, catchup_max=schedule.catchup_max, anchor=schedule_anchor(schedule))
    spec = registered_tasks().get(schedule.function_name)
    problem = None
    if spec is None:
        problem = f"task {schedule.function_name!r} is not registered in this scheduler"
    elif not spec.runs_on_nats:
        problem = f"task {spec.name!r} is a sync task now; a schedule only fires queued tasks"
    fired: list[Task] = []
    with transaction.atomic():
        claimed = Schedule.objects.filter(id=schedule.id, enabled=True, next_run_at=schedule.next_run_at).update(
            next_run_at=plan.next_run_at)
        if not claimed:
            return 0  # another scheduler fired this round, or the schedule was paused or edited meanwhile
        if problem is not None or spec is None:
            logger.warning("schedule %s: %s; %d slot(s) not fired", schedule.name, problem, len(plan.slots))
            return 0
        for slot, reason in plan.slots:
            try:
                with transaction.atomic():
                    task = task_insert_pending(spec=spec, args=dict(schedule.args), creator=schedule_creator(schedule))
                    ScheduleFire.objects.create(schedule=schedule, slot_at=slot, fired_at=now, task_id=task.id,
                                                reason=reason)
            except IntegrityError:
                logger.info("schedule %s: slot %s had fired already; not again", schedule.name, slot.isoformat())
                continue
            fired.append(task)
        if fired:
            Schedule.objects.filter(id=schedule.id).update(last_fired_at=now)
    if fired:
        task_queue_inserted(ports=ports, spec=spec, tasks=fired)
    return len(fired)


# --- schedules declared in code ------------------------------------------------------------------


@dataclass
class CodeSync:
    """What `schedules_sync_code` changed, by schedule name."""

    created: list[str]
    updated: list[str]
    paused: list[str]
    left: list[str]  # a schedule a person made has the task's name: left alone


def schedules_sync_code(*, specs: Mapping[str, TaskSpec], now: datetime | None = None) -> CodeSync:
    """Create or update a schedule (source code) per task declared with `schedule=`, named after the task;
    pause (never delete) the code schedules whose decorator is gone, and lift that pause when it is back.

    Runs at every scheduler start; several starting at once make the same changes (a name taken by a
    concurrent create is left to the one that took it). A person's pause of a code schedule is kept; an
    edit of its timing or arguments is overwritten by the code's.
    """
    now = now or timezone.now()
    report = CodeSync(created=[], updated=[], paused=[], left=[])
    declared = {name: spec for name, spec in specs.items() if spec.schedule is not None}
    for name, spec in sorted(declared.items()):
        assert spec.schedule is not None
        wanted = {"function_name": spec.name, "args": dict(spec.schedule.args), "cron": spec.schedule.cron,
                  "interval_s": spec.schedule.interval_s, "timezone": spec.schedule.timezone,
                  "missed": spec.schedule.missed, "catchup_max": spec.schedule.catchup_max,
                  "description": spec.schedule.description or spec.description.split("\n")[0][:DESCRIPTION_MAX]}
        existing = Schedule.objects.filter(name=name).first()
        if existing is None:
            try:
                schedule_create(name=name, fields=wanted, created_by=CODE_CREATOR, source=Schedule.Source.CODE,
                                now=now, spec=spec)
                report.created.append(name)
            except Conflict:
                pass  # another scheduler starting now created it
            continue
        if existing.source != Schedule.Source.CODE:
            logger.warning("task %s declares a schedule, but a schedule named %s was made by a person: left as it is",
                           name, name)
            report.left.append(name)
            continue
        changes = {field: value for field, value in wanted.items() if getattr(existing, field) != value}
        if not existing.enabled and existing.paused_by == Schedule.CODE_GONE:
            changes["enabled"] = True
        if changes:
            schedule_update(name=name, changes=changes, by=CODE_CREATOR, now=now, spec=spec)
            report.updated.append(name)
    gone = Schedule.objects.filter(source=Schedule.Source.CODE, enabled=True).exclude(name__in=list(declared))
    for schedule in gone:
        schedule_pause(name=schedule.name, by=Schedule.CODE_GONE)
        report.paused.append(schedule.name)
    return report
