"""Dead letters: queued tasks that ended for good without a result (failed after their retries, max
deliveries reached, lost with their worker, or expired before they started), grouped by function and
error type, so an operator sees a bad day as a handful of causes instead of thousands of rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Max, Min

from tasks_app.models import Task, TaskStatus

DEAD_STATUSES = (TaskStatus.FAILED, TaskStatus.EXPIRED)
DEAD_RANGES: dict[str, tuple[str, timedelta]] = {
    "24h": ("last 24 hours", timedelta(hours=24)),
    "7d": ("last 7 days", timedelta(days=7)),
    "30d": ("last 30 days", timedelta(days=30)),
}
DEFAULT_RANGE = "7d"
MAX_GROUPS = 100


@dataclass(frozen=True)
class DeadLetterGroup:
    function_name: str
    error_type: str  # "" when the failure named none
    status: str  # failed or expired
    count: int
    first_seen: datetime
    last_seen: datetime
    latest_error: str
    latest_task_id: str


def dead_letter_groups(*, now: datetime, range_key: str = DEFAULT_RANGE) -> list[DeadLetterGroup]:
    """The groups of the tasks created in the range, most tasks first (at most MAX_GROUPS).

    Sync tasks are left out: their caller got the error in the response. The range is on created_at,
    which the (status, created_at) index serves; first and last seen are when those tasks ended."""
    # From a whole minute: the task list's `after` filter, which a group's links and bulk retry use, has
    # minutes, so both count the same tasks.
    since = (now - DEAD_RANGES.get(range_key, DEAD_RANGES[DEFAULT_RANGE])[1]).replace(second=0, microsecond=0)
    dead = Task.objects.filter(status__in=DEAD_STATUSES, created_at__gte=since).exclude(execution_mode="sync")
    rows = list(
        dead.values("function_name", "error_type", "status")
        .annotate(count=Count("id"), first_seen=Min("completed_at"), last_seen=Max("completed_at"))
        .order_by("-count", "function_name", "error_type")[:MAX_GROUPS]
    )
    groups = []
    for row in rows:
        latest = (dead.filter(function_name=row["function_name"], error_type=row["error_type"], status=row["status"])
                  .order_by("-created_at").values_list("id", "error").first())
        assert latest is not None  # the group has at least one task
        groups.append(DeadLetterGroup(
            function_name=row["function_name"], error_type=row["error_type"], status=row["status"],
            count=row["count"], first_seen=row["first_seen"] or since, last_seen=row["last_seen"] or now,
            latest_error=latest[1], latest_task_id=str(latest[0]),
        ))
    return groups
