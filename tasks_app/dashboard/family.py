"""The task page's family card: its parent, its group (counts, progress, callback), the groups it started
and its children a page at a time."""

from __future__ import annotations

from typing import Any

from tasks_app.models import Task, TaskGroup
from tasks_app.selectors import groups as selectors

GROUPS_SHOWN = 20  # groups a task started, newest first


def _group_card(group: TaskGroup) -> dict[str, Any]:
    counts = selectors.group_counts(group_id=group.id)
    return {"group": group, **selectors.group_progress(counts, group.size),
            "callback": Task.objects.filter(id=group.callback_task_id).only("id", "function_name", "status").first()
            if group.callback_task_id else None}


def task_family_context(*, task: Task, children_page: str | None, user: Any) -> dict[str, Any]:
    try:
        page = int(children_page or 1)
    except ValueError:
        page = 1
    parent = Task.objects.filter(id=task.parent_id).only("id", "function_name", "status").first() \
        if task.parent_id else None
    group = TaskGroup.objects.filter(id=task.group_id).first() if task.group_id else None
    started = list(TaskGroup.objects.filter(parent_id=task.id).order_by("-created_at")[:GROUPS_SHOWN])
    children = selectors.task_children(task_id=task.id, page=page)
    return {
        "family": {
            "parent": parent, "parent_id": task.parent_id,
            "group": _group_card(group) if group is not None else None,
            "started": [_group_card(g) for g in started],
            "children": children,
            "any": bool(task.parent_id or group or started or children.total),
        },
        "can_cancel_groups": user.has_perm("tasks_app.cancel_task"),
    }
