"""Reads of bulk actions: one action, the tasks a filter matches (for the confirmation's count), the recent ones.

A bulk filter is a `TaskFilters` stored as JSON (`filter_to_json` / `filter_from_json`): the keys the API's
`POST /tasks/bulk` takes, with absolute times only (the dashboard's "last hour" is fixed when asked).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from django.db.models import Q, QuerySet

from tasks_app.core.errors import InvalidArguments, TaskNotFound
from tasks_app.models import BulkAction, Task, TaskStatus
from tasks_app.selectors.tasks import TaskFilters, task_queryset

# The filter's JSON keys, and the TaskFilters field each one sets.
FILTER_KEYS = {
    "status": "status", "function": "function", "pool": "pool", "mode": "execution_mode",
    "error_type": "error_type", "error_contains": "error_contains", "id_prefix": "id_prefix",
    "created_after": "created_after", "created_before": "created_before",
}
TIME_KEYS = ("created_after", "created_before")
TEXT_MAX = 200
RECENT = 20


def filter_from_json(raw: Any) -> TaskFilters:
    """A bulk filter from its JSON. Raises InvalidArguments (422) naming each bad key as `filter.<key>`."""
    if not isinstance(raw, Mapping):
        raise InvalidArguments("'filter' must be an object such as {\"status\": \"queued\", \"function\": \"f\"}",
                               fields=[{"field": "filter", "message": "must be an object"}])
    bad: list[dict[str, str]] = []
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in FILTER_KEYS:
            bad.append({"field": f"filter.{key}", "message": f"unknown; one of {', '.join(FILTER_KEYS)}"})
        elif value is None or value == "":
            continue
        elif not isinstance(value, str) or len(value) > TEXT_MAX or "\x00" in value:
            bad.append({"field": f"filter.{key}", "message": f"must be a string of at most {TEXT_MAX} characters"})
        elif key in TIME_KEYS:
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                bad.append({"field": f"filter.{key}", "message": "must be an ISO 8601 date and time"})
                continue
            values[FILTER_KEYS[key]] = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        elif key == "status" and value not in TaskStatus.values:
            bad.append({"field": "filter.status", "message": f"one of {', '.join(TaskStatus.values)}"})
        else:
            values[FILTER_KEYS[key]] = value
    if bad:
        described = "; ".join(f"{b['field']}: {b['message']}" for b in bad)
        raise InvalidArguments(f"invalid bulk filter: {described}", fields=bad)
    return TaskFilters(**values)


def filter_to_json(filters: TaskFilters) -> dict[str, str]:
    """The JSON of a filter (only the keys it sets); `owner` is not part of a bulk filter."""
    by_field = {field_name: key for key, field_name in FILTER_KEYS.items()}
    out: dict[str, str] = {}
    for field in fields(filters):
        value = getattr(filters, field.name)
        if field.name in by_field and value:
            out[by_field[field.name]] = value.isoformat() if isinstance(value, datetime) else str(value)
    return out


def bulk_matching(*, filters: TaskFilters, snapshot_at: datetime) -> QuerySet[Task]:
    """The tasks a bulk action over `filters` asked for at `snapshot_at` works on (newer ones never)."""
    return task_queryset(filters=filters).filter(created_at__lt=snapshot_at)


def bulk_count(*, filters: TaskFilters, snapshot_at: datetime) -> int:
    """The exact number of tasks the filter matches (what the confirmation shows)."""
    return bulk_matching(filters=filters, snapshot_at=snapshot_at).order_by().count()


def bulk_next_chunk(*, bulk: BulkAction, size: int) -> list[tuple[uuid.UUID, datetime]]:
    """The next `size` matching tasks below the action's cursor, newest first, as (id, created_at)."""
    qs = bulk_matching(filters=filter_from_json(bulk.filter), snapshot_at=bulk.snapshot_at)
    if bulk.cursor_created_at is not None and bulk.cursor_id is not None:
        qs = qs.filter(Q(created_at__lt=bulk.cursor_created_at)
                       | Q(created_at=bulk.cursor_created_at, id__lt=bulk.cursor_id))
    return list(qs.order_by("-created_at", "-id").values_list("id", "created_at")[:size])


def bulk_get(*, bulk_id: uuid.UUID) -> BulkAction:
    bulk = BulkAction.objects.filter(id=bulk_id).first()
    if bulk is None:
        raise TaskNotFound(f"no bulk action with id {bulk_id}", bulk_id=str(bulk_id))
    return bulk


def bulk_recent(*, limit: int = RECENT) -> list[BulkAction]:
    return list(BulkAction.objects.order_by("-created_at")[:limit])


def bulk_as_dict(bulk: BulkAction) -> dict[str, Any]:
    """A bulk action as the API shows it."""
    return {
        "bulk_id": str(bulk.id), "action": bulk.action, "filter": bulk.filter, "status": bulk.status,
        "total": bulk.total, "done": bulk.done, "failed": bulk.failed, "note": bulk.note or None,
        "stop_requested": bulk.stop_requested, "created_by": bulk.created_by, "created_at": bulk.created_at,
        "started_at": bulk.started_at, "finished_at": bulk.finished_at,
    }
