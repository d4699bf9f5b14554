"""A submit's place in its pool's queue (`priority`) and its uniqueness (`unique_for_s`), checked as the
caller sent them.

Priority: "high", "normal" or "low" (neutrino.app.PRIORITIES); the task's own (`@app.task(priority=...)`)
unless the submit gives one. Each level has its own subject and consumer; workers take free slots from
the highest level that waits (workers.pool_worker.priority).

Uniqueness: a submit of a unique task (`@app.task(unique_for_s=...)`, or `unique_for_s` in the submit)
is keyed on its function and the arguments `unique_on` names (all of them by default). The key is
written in the task row's unique `unique_key` column with the end of its window (`unique_until`), so
the database decides between gateways: of two submits racing on any number of servers, one INSERT
wins and the other finds its task. A window that has ended is released the next time the key is used
(as idempotency keys past their TTL are). The window counts from the first submit and does not end
when the task finishes; a duplicate is answered with the first task whatever its state.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from neutrino.app import PRIORITIES, TaskSpec
from tasks_app.core.errors import InvalidArguments
from tasks_app.models import Task

# The body fields of a submit beside "args" that this module reads (a batch takes `priority` only).
FLOW_FIELDS = ("priority", "unique_for_s")


@dataclass(frozen=True)
class Uniqueness:
    """A unique submit's key and the end of its window."""

    key: str
    until: datetime


def submit_priority(*, spec: TaskSpec, value: Any) -> str:
    """The submit's priority: `value` from its body, or the task's own when None. 422 naming the field."""
    if value is None:
        return spec.priority
    if value not in PRIORITIES:
        raise InvalidArguments(f"priority must be one of {', '.join(PRIORITIES)}, got {value!r}",
                               fields=[{"field": "priority", "message": f"one of {', '.join(PRIORITIES)}"}])
    if value != "normal" and not spec.runs_on_nats:
        raise InvalidArguments(f"{spec.name} is a sync task: it runs at once and waits in no queue, so it has "
                               "no priority; make it async to give it one",
                               task=spec.name, fields=[{"field": "priority", "message": "not for sync tasks"}])
    return str(value)


def submit_uniqueness(*, spec: TaskSpec, args: dict[str, Any], value: Any,
                      now: datetime | None = None) -> Uniqueness | None:
    """The submit's uniqueness: its body's `unique_for_s` (`value`), else the task's own; None when neither."""
    window_s = spec.unique_for_s if value is None else value
    if window_s is None:
        return None
    if isinstance(window_s, bool) or not isinstance(window_s, (int, float)) or not 0 < window_s < math.inf:
        raise InvalidArguments(f"unique_for_s must be a positive number of seconds, got {window_s!r}",
                               fields=[{"field": "unique_for_s", "message": "must be a number > 0"}])
    if not spec.runs_on_nats:
        raise InvalidArguments(f"{spec.name} is a sync task: unique_for_s is for queued tasks (a sync call "
                               "answers its caller at once)",
                               task=spec.name, fields=[{"field": "unique_for_s", "message": "not for sync tasks"}])
    now = now or timezone.now()
    try:
        until = now + timedelta(seconds=window_s)
    except OverflowError:
        raise InvalidArguments("unique_for_s is too large", fields=[{"field": "unique_for_s", "message": "too large"}])
    return Uniqueness(key=unique_key(spec=spec, args=args), until=until)


def unique_key(*, spec: TaskSpec, args: dict[str, Any]) -> str:
    """`<function>:<sha256 of the chosen arguments as canonical JSON>`, of the arguments as sent (leaving
    one out is not the same as passing its default)."""
    chosen = args if spec.unique_on is None else {name: args.get(name) for name in spec.unique_on}
    canonical = json.dumps(chosen, sort_keys=True, separators=(",", ":"), default=str)
    return f"{spec.name}:{hashlib.sha256(canonical.encode()).hexdigest()}"


def task_by_unique_key(*, key: str) -> Task | None:
    """The task whose window for `key` still runs; a window that ended is released here and None returned."""
    task = Task.objects.filter(unique_key=key).first()
    if task is None:
        return None
    if task.unique_until is None or task.unique_until <= timezone.now():
        Task.objects.filter(id=task.id, unique_key=key).update(unique_key=None)
        return None
    return task
