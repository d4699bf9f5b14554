"""Reads of groups, chains and a task's children (`tasks_app.services.groups` writes them)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.db.models import Count

from tasks_app.core.errors import GroupNotFound
from tasks_app.models import FINISHED_STATUSES, Task, TaskCreator, TaskGroup, TaskStatus

CHILDREN_PAGE = 50


def group_get(*, group_id: uuid.UUID, owner: TaskCreator | None = None) -> TaskGroup:
    """One group (of `owner`'s, when given). Raises GroupNotFound."""
    rows = TaskGroup.objects.filter(id=group_id)
    if owner is not None:
        rows = (rows.filter(created_by_token_id=owner.token_id) if owner.token_id is not None
                else rows.filter(created_by=owner.label, created_by_token_id__isnull=True))
    group = rows.first()
    if group is None:
        raise GroupNotFound(f"no group with id {group_id}", group_id=str(group_id))
    return group


def group_counts(*, group_id: uuid.UUID) -> dict[str, int]:
    """Its members by status (one range scan of the (group_id, status) index)."""
    rows = Task.objects.filter(group_id=group_id).order_by().values("status").annotate(n=Count("id"))
    return {str(row["status"]): int(row["n"]) for row in rows}


def chain_last_group(*, chain_id: uuid.UUID) -> TaskGroup | None:
    """The chain's group made last (the step that runs now, or the last one)."""
    return TaskGroup.objects.filter(chain_id=chain_id).order_by("-chain_step").first()


def group_as_dict(group: TaskGroup) -> dict[str, Any]:
    """The group as the API shows it: counts by status, and for a chain the task whose result is the chain's."""
    counts = group_counts(group_id=group.id)
    finished = sum(n for status, n in counts.items() if status in FINISHED_STATUSES)
    body: dict[str, Any] = {
        "group_id": str(group.id), "function_name": group.function_name, "size": group.size,
        "then": group.then_function or None, "policy": group.policy, "counts": counts, "finished": finished,
        "fired": group.fired_at is not None, "fired_at": group.fired_at,
        "callback_task_id": str(group.callback_task_id) if group.callback_task_id else None,
        "parent_id": str(group.parent_id) if group.parent_id else None,
        "cancel_requested": group.cancel_requested, "created_at": group.created_at,
        "created_by": group.created_by or None,
    }
    if group.chain_id is not None:
        last = chain_last_group(chain_id=group.chain_id)
        steps = group.chain_step + 1 + 1 + len(group.chain_rest)  # before, this group's member, callback, rest
        done = last is not None and last.fired_at is not None and not last.chain_rest
        body["chain"] = {
            "chain_id": str(group.chain_id), "step": group.chain_step, "steps": steps,
            "current_step": last.chain_step if last is not None else 0,
            # The task whose result is the chain's: the last step's, once it exists.
            "result_task_id": str(last.callback_task_id) if done and last is not None and last.callback_task_id
            else None,
        }
    return body


@dataclass(frozen=True)
class Children:
    items: list[Task]
    total: int
    page: int
    pages: int


def task_children(*, task_id: uuid.UUID, page: int = 1, per_page: int = CHILDREN_PAGE) -> Children:
    """The tasks `task_id` submitted (and the callbacks of its groups), newest first, a page at a time."""
    rows = Task.objects.filter(parent_id=task_id).order_by("-created_at", "-id")
    total = rows.count()
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    items = list(rows.only("id", "function_name", "status", "created_at", "group_id", "duration_ms")
                 [(page - 1) * per_page: page * per_page])
    return Children(items=items, total=total, page=page, pages=pages)


def group_progress(counts: dict[str, int], size: int) -> dict[str, Any]:
    """What the dashboard's bar shows: the percentage finished and the counts in a fixed order."""
    finished = sum(n for status, n in counts.items() if status in FINISHED_STATUSES)
    order = [*[s.value for s in TaskStatus], *sorted(set(counts) - set(TaskStatus.values))]
    return {"percent": round(100 * finished / size) if size else 100, "finished": finished,
            "counts": [(status, counts[status]) for status in order if counts.get(status)]}
