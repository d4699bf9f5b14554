"""A submit's timing: when a queued task may run (`run_at` / `delay_s`) and until when it may start
(`expires_at` / `expires_s`, or the task's default `expires_s`), checked as the caller sent them.

`expires_at` is computed at submit, relative to the submit (not to `run_at`). What happens at those times
is in `tasks_app.services.delays`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from neutrino.app import TaskSpec
from tasks_app.core.errors import InvalidArguments

# The body fields of a submit that set its timing (beside "args"; a batch's apply to every item).
TIMING_FIELDS = ("run_at", "delay_s", "expires_s", "expires_at")
DELAY_HINT = "sync tasks answer in their response; make it async to delay it"
EXPIRY_HINT = "sync tasks run at once and never wait; make it async to give it an expiry"


@dataclass(frozen=True)
class Timing:
    """When a submitted task may run and until when it may start. `run_at` is set only on a task that
    waits for it (a time still to come at submit); `expires_at` on one that expires."""

    run_at: datetime | None = None
    expires_at: datetime | None = None


def submit_timing(*, spec: TaskSpec, fields: Mapping[str, Any], now: datetime | None = None) -> Timing:
    """The timing a submit asks for: `fields` holds any of TIMING_FIELDS from its body; the task's default
    `expires_s` (from `@app.task`) applies when the submit names no expiry.

    Raises InvalidArguments (422) naming the field: a time without a UTC offset, a negative delay, both
    fields of a pair, any of them on a sync task, an expiry before the task could start.
    """
    now = now or timezone.now()
    given = [name for name in TIMING_FIELDS if fields.get(name) is not None]
    if not spec.runs_on_nats and given:
        delaying = [name for name in given if name in ("run_at", "delay_s")]
        raise InvalidArguments(
            f"{spec.name} is a sync task: {DELAY_HINT if delaying else EXPIRY_HINT}",
            task=spec.name, fields=[{"field": name, "message": "not for sync tasks"} for name in given],
        )
    start = _pick_time(fields, "run_at", "delay_s", now=now, allow_zero=True)
    expires_at = _pick_time(fields, "expires_at", "expires_s", now=now, allow_zero=False)
    expiry_field = "expires_at" if fields.get("expires_at") is not None else "expires_s"
    if expires_at is None and spec.expires_s is not None:
        expires_at = _after(now, spec.expires_s, "expires_s")
        expiry_field = "expires_s"
    run_at = start if start is not None and start > now else None
    if expires_at is not None and expires_at <= (run_at or now):
        default = expiry_field == "expires_s" and fields.get("expires_s") is None
        why = (f"{spec.name} expires {spec.expires_s:g} s after its submit (its default expires_s), "
               if default else "")
        raise InvalidArguments(
            f"{why}expires_at ({expires_at.isoformat()}) is not after the time the task may start "
            f"({(run_at or now).isoformat()}): it would expire before it could run; expiry counts from the "
            "submit, not from run_at, so give a later expires_at or a longer expires_s",
            task=spec.name, fields=[{"field": expiry_field, "message": "expires before the task may start"}],
        )
    return Timing(run_at=run_at, expires_at=expires_at)


def _pick_time(fields: Mapping[str, Any], at_name: str, seconds_name: str, *, now: datetime,
               allow_zero: bool) -> datetime | None:
    """The moment one of a pair names: an ISO 8601 time with an offset, or seconds from `now`."""
    at, seconds = fields.get(at_name), fields.get(seconds_name)
    if at is not None and seconds is not None:
        raise InvalidArguments(
            f"give {at_name} or {seconds_name}, not both",
            fields=[{"field": name, "message": "give only one of the two"} for name in (at_name, seconds_name)],
        )
    if at is not None:
        return _aware_time(at_name, at)
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or (
        seconds < 0 if allow_zero else seconds <= 0
    ):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidArguments(f"{seconds_name} must be a number of seconds {bound}, got {seconds!r}",
                               fields=[{"field": seconds_name, "message": f"must be a number {bound}"}])
    return _after(now, seconds, seconds_name)


def _after(now: datetime, seconds: float, name: str) -> datetime:
    try:
        return now + timedelta(seconds=seconds)
    except OverflowError:
        raise InvalidArguments(f"{name} is too far in the future", fields=[{"field": name, "message": "too large"}])


def _aware_time(name: str, value: Any) -> datetime:
    if not isinstance(value, str):
        raise InvalidArguments(f"{name} must be an ISO 8601 time string like 2026-12-03T09:30:00+00:00",
                               fields=[{"field": name, "message": "must be a string"}])
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidArguments(f"{name} {value[:60]!r} is not an ISO 8601 time like 2026-12-03T09:30:00+00:00",
                               fields=[{"field": name, "message": "not an ISO 8601 time"}])
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidArguments(
            f"{name} {value[:60]!r} has no UTC offset, so the moment it names depends on a time zone: "
            "add one (2026-12-03T09:30:00+01:00, or Z for UTC)",
            fields=[{"field": name, "message": "needs a UTC offset (+00:00 or Z)"}],
        )
    return moment
