"""Idempotency-Keys: a repeat of a call made within NEUTRINO_IDEMPOTENCY_TTL_S (24 h) answers with the task the
first call made, never a second task (tasks_app.services.submit claims the key with the row's INSERT).

Keys are stored as `<caller scope>:<key>` (`#<index>` appended per batch item), so one token never replays
another's task. After the TTL a key is released the next time it is used.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.utils import timezone

from neutrino.app import TaskSpec
from tasks_app.core.conf import neutrino_settings
from tasks_app.core.errors import BadRequest, Conflict
from tasks_app.models import Task

KEY_MAX_CHARS = 128


def idempotency_key(*, scope: str, header: str | None) -> str | None:
    """The stored form of an Idempotency-Key header (None when there is none). Raises BadRequest."""
    if header is None:
        return None
    key = header.strip()
    if not key or len(key) > KEY_MAX_CHARS or not key.isascii() or not key.isprintable():
        raise BadRequest(
            f"Idempotency-Key must be 1 to {KEY_MAX_CHARS} printable ASCII characters (a UUID is a good key)",
            field="Idempotency-Key",
        )
    return f"{scope}:{key}"


def task_by_key(*, key: str) -> Task | None:
    """The task a key made within the TTL. A key older than that is released here and None returned."""
    task = Task.objects.filter(idempotency_key=key).first()
    if task is None:
        return None
    if task.created_at < timezone.now() - timedelta(seconds=neutrino_settings().idempotency_ttl_s):
        Task.objects.filter(id=task.id, idempotency_key=key).update(idempotency_key=None)
        return None
    return task


def same_request(task: Task, *, spec: TaskSpec, args: dict[str, Any]) -> None:
    """Raise Conflict (409) unless `task` was made by the same call: a key is for one call only."""
    if task.function_name != spec.name or task.args != json.loads(json.dumps(args)):
        raise Conflict(
            f"this Idempotency-Key was already used for a different call ({task.function_name} with other "
            f"arguments, task {task.id}); use a new key for a new call",
            task_id=str(task.id),
        )
