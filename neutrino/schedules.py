"""Schedules in the SDK: what `@app.task(schedule=...)` accepts, cron parsing and the slots a schedule has.

A schedule is a cron expression (5 fields, or one of `@yearly @annually @monthly @weekly @daily
@midnight @hourly`) or a fixed interval in seconds, read in an IANA time zone. Its *slots* are the
times it fires at:

- cron: the times the expression matches in that zone, computed by cronsim, which handles daylight
  saving time as Debian's cron does: a job at a fixed time that falls in the hour skipped on a
  spring-forward day runs once, at the first minute after the gap (02:30 -> 03:00); a job in the hour
  repeated on a fall-back day runs once, at its first occurrence. Expressions with `*` in the minute or
  hour field follow real (UTC) time instead: `*/15 * * * *` stays every 15 minutes through both changes.
- interval: `anchor + k * interval_s` for k = 1, 2, ... (the server anchors a schedule at its creation),
  so a restart or a late tick never shifts the slots that follow.

Everything here raises `ScheduleError` (a ValueError naming the field and what is wrong), so the
decorator can refuse a bad schedule when it runs, and the server turns the same message into a 422.
Imports no Django.
"""

from __future__ import annotations

import math
import zoneinfo
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cronsim import CronSim, CronSimError

# The @-names cronsim does not know, as Debian's cron defines them.
CRON_ALIASES: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
CRON_FIELDS: tuple[tuple[str, str], ...] = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day of month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day of week", "0-7 or SUN-SAT"),
)
MISSED_POLICIES = ("skip", "once", "all")
CRON_MAX_CHARS = 120  # Schedule.cron
INTERVAL_MAX_S = 366 * 86_400
CATCHUP_MAX_LIMIT = 1000
ONE_SECOND = timedelta(seconds=1)


class ScheduleError(ValueError):
    """A schedule that cannot work as written. `field` names what is wrong (cron, interval_s, timezone, ...)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def normalize_cron(expr: str) -> str:
    """The 5-field form of a cron expression or @-name; raises ScheduleError naming the bad field."""
    if not isinstance(expr, str):
        raise ScheduleError(f"a cron expression is a string like '*/5 * * * *', not {expr!r}", field="cron")
    text = " ".join(expr.split())
    if not text:
        raise ScheduleError("the cron expression is empty: give 5 fields like '*/5 * * * *', or '@daily'",
                            field="cron")
    if len(text) > CRON_MAX_CHARS:
        raise ScheduleError(f"the cron expression is longer than {CRON_MAX_CHARS} characters", field="cron")
    if text.startswith("@"):
        alias = CRON_ALIASES.get(text.lower())
        if alias is None:
            raise ScheduleError(f"unknown cron name {text!r}; use one of {', '.join(CRON_ALIASES)}", field="cron")
        return alias
    parts = text.split(" ")
    if len(parts) != 5:
        raise ScheduleError(
            f"cron expression {text!r} has {len(parts)} field(s); it needs 5: minute hour day-of-month month "
            "day-of-week (seconds are not supported: use interval_s for sub-minute schedules)",
            field="cron",
        )
    for index, (name, allowed) in enumerate(CRON_FIELDS):
        # Each field alone, the others '*': the error then names the field that is wrong.
        probe = ["*"] * 5
        probe[index] = parts[index]
        try:
            CronSim(" ".join(probe), datetime(2000, 1, 1, tzinfo=UTC))
        except (CronSimError, ValueError, IndexError):
            raise ScheduleError(
                f"cron expression {text!r}: the {name} field {parts[index]!r} is not valid ({allowed}, "
                "with * , - / allowed)", field="cron")
    try:
        CronSim(text, datetime(2000, 1, 1, tzinfo=UTC))
    except (CronSimError, ValueError, IndexError) as exc:
        raise ScheduleError(f"cron expression {text!r} never matches a date ({exc})", field="cron")
    return text


def check_timezone(name: str) -> zoneinfo.ZoneInfo:
    """The zone an IANA name names (`Europe/Paris`, `UTC`); raises ScheduleError otherwise."""
    if not isinstance(name, str) or not name.strip():
        raise ScheduleError("the time zone is empty: give an IANA name like 'Europe/Paris' or 'UTC'",
                            field="timezone")
    try:
        return zoneinfo.ZoneInfo(name.strip())
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(f"unknown time zone {name!r}: give an IANA name like 'Europe/Paris', "
                            "'America/New_York' or 'UTC'", field="timezone")


def check_interval(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= INTERVAL_MAX_S:
        raise ScheduleError(f"interval_s must be a whole number of seconds from 1 to {INTERVAL_MAX_S}, "
                            f"not {value!r}", field="interval_s")
    return value


def check_missed(value: Any) -> str:
    if value not in MISSED_POLICIES:
        raise ScheduleError(f"missed must be one of {', '.join(MISSED_POLICIES)}, not {value!r}", field="missed")
    return str(value)


def check_catchup_max(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= CATCHUP_MAX_LIMIT:
        raise ScheduleError(f"catchup_max must be a whole number from 1 to {CATCHUP_MAX_LIMIT}, not {value!r}",
                            field="catchup_max")
    return value


def check_timing(cron: str | None, interval_s: Any) -> tuple[str, int | None]:
    """Exactly one of a cron expression and an interval; the cron normalized."""
    has_cron = bool(cron and str(cron).strip())
    if has_cron == (interval_s is not None):
        raise ScheduleError("give either a cron expression or interval_s (seconds), not both and not neither",
                            field="cron" if has_cron or interval_s is None else "interval_s")
    if has_cron:
        return normalize_cron(str(cron)), None
    return "", check_interval(interval_s)


@dataclass(frozen=True)
class Schedule:
    """When a task fires on its own: `cron` or `interval_s`, in `timezone`, with `args`.

    `missed` says what happens to slots that passed while no scheduler ran: "skip" them, fire "once"
    for them all, or fire "all" of them (at most the latest `catchup_max`). Validated when made.
    """

    cron: str = ""
    interval_s: int | None = None
    timezone: str = "UTC"
    args: Mapping[str, Any] = field(default_factory=dict)
    missed: str = "skip"
    catchup_max: int = 10
    description: str = ""

    def __post_init__(self) -> None:
        cron, interval_s = check_timing(self.cron, self.interval_s)
        object.__setattr__(self, "cron", cron)
        object.__setattr__(self, "interval_s", interval_s)
        object.__setattr__(self, "timezone", check_timezone(self.timezone).key)
        if not isinstance(self.args, Mapping):
            raise ScheduleError(f"args must be a mapping of argument names to values, not {self.args!r}",
                                field="args")
        object.__setattr__(self, "args", dict(self.args))
        check_missed(self.missed)
        check_catchup_max(self.catchup_max)
        if not isinstance(self.description, str):
            raise ScheduleError("description must be a string", field="description")

    @property
    def timing(self) -> str | int:
        """The cron expression, or the interval in seconds: what `next_runs` takes."""
        return self.interval_s if self.interval_s is not None else self.cron


SCHEDULE_KEYS = {"cron", "interval_s", "timezone", "args", "missed", "catchup_max", "description"}


def schedule_of(value: str | Mapping[str, Any] | Schedule) -> Schedule:
    """What `@app.task(schedule=...)` was given, as a validated `Schedule`: a cron expression or @-name,
    a mapping of Schedule's fields, or a Schedule."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, str):
        return Schedule(cron=value)
    if isinstance(value, Mapping):
        unknown = set(value) - SCHEDULE_KEYS
        if unknown:
            raise ScheduleError(f"unknown schedule field(s) {', '.join(sorted(map(str, unknown)))}; "
                                f"use {', '.join(sorted(SCHEDULE_KEYS))}", field=sorted(map(str, unknown))[0])
        return Schedule(**value)
    raise ScheduleError(f"schedule must be a cron string, a dict or neutrino.Schedule(...), not {value!r}",
                        field="schedule")


# --- slots -----------------------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("schedule times must be aware datetimes")
    return moment.astimezone(UTC)


def _interval_index(anchor: datetime, moment: datetime, interval_s: int) -> float:
    return (moment - anchor).total_seconds() / interval_s


def slots_between(timing: str | int, tz: str, *, start: datetime, end: datetime, anchor: datetime | None = None,
                  limit: int = 1000) -> list[datetime]:
    """The slots in [start, end], oldest first, at most `limit` (the oldest ones), in UTC.

    `anchor` (interval schedules): the time slot 0 would be at; default `start`.
    """
    start, end = _utc(start), _utc(end)
    found: list[datetime] = []
    if isinstance(timing, int):
        base = _utc(anchor) if anchor is not None else start
        k = max(1, math.ceil(_interval_index(base, start, timing)))
        while len(found) < limit:
            slot = base + timedelta(seconds=k * timing)
            if slot > end:
                break
            if slot >= start:
                found.append(slot)
            k += 1
        return found
    zone = check_timezone(tz)
    first = (start.replace(microsecond=0) - ONE_SECOND).astimezone(zone)
    for slot in _cron_iter(timing, first, reverse=False):
        if slot > end or len(found) >= limit:
            break
        if slot >= start:
            found.append(slot)
    return found


def slots_before(timing: str | int, tz: str, *, end: datetime, not_before: datetime,
                 anchor: datetime | None = None, limit: int = 1) -> list[datetime]:
    """The latest slots in [not_before, end], newest first, at most `limit`, in UTC (work bounded by
    `limit`, however long ago `not_before` is)."""
    end, not_before = _utc(end), _utc(not_before)
    found: list[datetime] = []
    if isinstance(timing, int):
        base = _utc(anchor) if anchor is not None else not_before
        k = math.floor(_interval_index(base, end, timing))
        while k >= 1 and len(found) < limit:
            slot = base + timedelta(seconds=k * timing)
            if slot < not_before:
                break
            found.append(slot)
            k -= 1
        return found
    zone = check_timezone(tz)
    last = (end.replace(microsecond=0) + ONE_SECOND).astimezone(zone)
    for slot in _cron_iter(timing, last, reverse=True):
        if slot < not_before or len(found) >= limit:
            break
        if found and slot >= found[-1]:
            break  # never loop: a DST fix-up may hand the same minute back when walking backwards
        if slot <= end:
            found.append(slot)
    return found


def _cron_iter(expr: str, moment: datetime, *, reverse: bool) -> Iterator[datetime]:
    for slot in CronSim(normalize_cron(expr), moment, reverse=reverse):
        yield slot.astimezone(UTC)


def next_runs(expr_or_interval: str | int, tz: str = "UTC", after: datetime | None = None, n: int = 5, *,
              anchor: datetime | None = None) -> list[datetime]:
    """The next `n` slots strictly after `after` (default: now), in `tz`.

    `expr_or_interval`: a cron expression or @-name, or an interval in seconds (slots `anchor + k *
    interval`, the anchor defaulting to `after`). Raises ScheduleError for a bad expression or zone.
    """
    zone = check_timezone(tz)
    moment = _utc(after) if after is not None else datetime.now(UTC)
    if isinstance(expr_or_interval, bool):
        raise ScheduleError("give a cron expression or an interval in seconds", field="cron")
    timing: str | int = (check_interval(expr_or_interval) if isinstance(expr_or_interval, int)
                         else normalize_cron(expr_or_interval))
    slots = slots_between(timing, tz, start=moment + timedelta(microseconds=1), end=datetime.max.replace(tzinfo=UTC),
                          anchor=anchor if anchor is not None else moment, limit=n)
    return [slot.astimezone(zone) for slot in slots]


# --- what a scheduler fires --------------------------------------------------------------------------

# A slot fired within this long after its time is on time, whatever the policy; an older one was
# missed (no scheduler ran, or the database was away) and the schedule's `missed` policy decides.
GRACE_S = 10.0
ON_TIME_MAX = 100  # on-time slots fired in one round (an interval of 1 s has at most GRACE_S + 1)


@dataclass(frozen=True)
class DueSlots:
    """What one round fires for a schedule: `(slot, reason)` oldest first ("slot" on time, "missed"
    late), and the slot to wait for next (strictly after now)."""

    slots: list[tuple[datetime, str]]
    next_run_at: datetime


def due_slots(timing: str | int, tz: str, *, due_since: datetime, now: datetime, missed: str, catchup_max: int,
              anchor: datetime | None = None) -> DueSlots:
    """The slots from `due_since` (the schedule's next_run_at) to `now` to fire under the policy `missed`.

    skip: only the on-time slots (within GRACE_S); once: those and the latest missed slot; all: those
    and the latest `catchup_max` missed slots. Work is bounded by the slots fired, not by how long
    ago `due_since` is.
    """
    due_since, now = _utc(due_since), _utc(now)
    grace_from = now - timedelta(seconds=GRACE_S)
    on_time = slots_between(timing, tz, start=max(due_since, grace_from), end=now, anchor=anchor, limit=ON_TIME_MAX)
    late_limit = {"skip": 0, "once": 1, "all": catchup_max}[check_missed(missed)]
    late: list[datetime] = []
    if late_limit and due_since < grace_from:
        late = slots_before(timing, tz, end=grace_from - timedelta(microseconds=1), not_before=due_since,
                            anchor=anchor, limit=late_limit)
    slots = [(slot, "missed") for slot in reversed(late)] + [(slot, "slot") for slot in on_time]
    following = slots_between(timing, tz, start=now + timedelta(microseconds=1), end=datetime.max.replace(tzinfo=UTC),
                              anchor=anchor, limit=1)
    return DueSlots(slots=slots, next_run_at=following[0])
