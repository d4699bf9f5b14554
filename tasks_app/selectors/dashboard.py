"""Reads for the dashboard: the task list's query from the URL, counters, one task's story, the overview.

Every query here is bounded and uses an index at a million rows (see bench/dashboard_scale.py):
the list is a keyset page; counters count at most COUNT_CAP rows per status; the overview reads
at most OVERVIEW_MAX_ROWS of the last hour's rows.
"""

from __future__ import annotations

import json
import logging
import math
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import CharField, QuerySet
from django.db.models.functions import Cast, Substr

from neutrino.app import EXECUTION_MODES
from tasks_app.core.ports import Broker
from tasks_app.core.registry import registered_tasks
from tasks_app.models import ACTIVE_STATUSES, Task, TaskAttempt, TaskStatus
from tasks_app.selectors.results import INLINE_IMAGE_TYPES, result_shown
from tasks_app.selectors.tasks import TaskFilters, TaskPage, decode_cursor, task_list, task_queryset
from workers.engine.broker.errors import BrokerError
from workers.engine.objects import ObjectRef
from workers.engine.topology import PoolDepth, pool_depth

logger = logging.getLogger("neutrino.dashboard")

PAGE_SIZE = 50
# Columns the list's rows do not show, so its query does not read them.
LIST_LEFT_OUT = ("args", "result", "error", "traceback")
COUNT_CAP = 10_000
COUNT_SCAN_CAP = 10_000
ID_PREFIX_MIN = 4  # hex digits: a shorter prefix matches a sixteenth of the table or more
OVERVIEW_WINDOW = timedelta(hours=1)
OVERVIEW_MAX_ROWS = 20_000
PERCENTILES = (50, 95)  # what the overview shows of each function's durations
RETRY_CHAIN_MAX = 20
DEPTH_TIMEOUT_S = 2.0

TIME_RANGES: dict[str, tuple[str, timedelta]] = {
    "15m": ("last 15 minutes", timedelta(minutes=15)),
    "1h": ("last hour", timedelta(hours=1)),
    "6h": ("last 6 hours", timedelta(hours=6)),
    "24h": ("last 24 hours", timedelta(hours=24)),
    "7d": ("last 7 days", timedelta(days=7)),
}
# The URL parameters the task list understands, in the order links write them.
LIST_PARAMS = ("q", "status", "function", "pool", "mode", "error_type", "error", "range", "after", "before", "cursor")
ERROR_FILTER_MAX = 200
_ID_PREFIX = re.compile(r"^[0-9a-fA-F-]{1,36}$")


@dataclass(frozen=True)
class ListQuery:
    """What the task list shows, parsed from its URL. `params` holds the valid parameters only."""

    filters: TaskFilters
    cursor: str | None
    params: dict[str, str]
    errors: tuple[str, ...] = ()

    @property
    def filter_params(self) -> dict[str, str]:
        """The parameters without the cursor (what a filter link or the first page keeps)."""
        return {k: v for k, v in self.params.items() if k != "cursor"}

    def with_params(self, **changes: str | None) -> dict[str, str]:
        params = dict(self.filter_params)
        for key, value in changes.items():
            if value:
                params[key] = value
            else:
                params.pop(key, None)
        return {k: params[k] for k in LIST_PARAMS if k in params}


def _parse_local_datetime(value: str) -> datetime:
    """A `datetime-local` input's value ("2025-01-31T14:05"), read as UTC."""
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def list_query_from_params(params: Mapping[str, str], *, now: datetime) -> ListQuery:
    """Parse the task list's URL parameters. Bad values are dropped and reported, never raised."""
    clean: dict[str, str] = {}
    errors: list[str] = []
    fields: dict[str, Any] = {}

    def text(name: str) -> str:
        return str(params.get(name, "") or "").strip()

    if status := text("status"):
        if status in TaskStatus.values:
            clean["status"] = fields["status"] = status
        else:
            errors.append(f"unknown status {status!r}")
    if function := text("function"):
        clean["function"] = fields["function"] = function[:200]
    if pool := text("pool"):
        clean["pool"] = fields["pool"] = pool[:64]
    if error_type := text("error_type"):
        clean["error_type"] = fields["error_type"] = error_type[:ERROR_FILTER_MAX]
    if error := text("error"):
        clean["error"] = fields["error_contains"] = error[:ERROR_FILTER_MAX]
    if mode := text("mode"):
        if mode in EXECUTION_MODES:
            clean["mode"] = fields["execution_mode"] = mode
        else:
            errors.append(f"unknown mode {mode!r}")
    if time_range := text("range"):
        if time_range in TIME_RANGES:
            clean["range"] = time_range
            fields["created_after"] = now - TIME_RANGES[time_range][1]
        else:
            errors.append(f"unknown time range {time_range!r}")
    for name, field_name in (("after", "created_after"), ("before", "created_before")):
        if value := text(name):
            try:
                moment = _parse_local_datetime(value)
            except ValueError:
                errors.append(f"{name}: {value!r} is not a date and time (YYYY-MM-DDTHH:MM, UTC)")
                continue
            clean[name] = value
            if field_name == "created_after" and "created_after" in fields:
                fields[field_name] = max(fields[field_name], moment)
            else:
                fields[field_name] = moment
    if q := text("q"):
        if _ID_PREFIX.match(q) and len(q.replace("-", "")) >= ID_PREFIX_MIN:
            clean["q"] = q.lower()
            fields["id_prefix"] = q.lower()
        else:
            errors.append(f"search takes a task id or its first {ID_PREFIX_MIN} or more hex digits, not {q[:60]!r}")
    cursor = text("cursor") or None
    if cursor:
        try:
            decode_cursor(cursor)
        except Exception:
            errors.append("the page link is invalid; showing the newest tasks")
            cursor = None
        else:
            clean["cursor"] = cursor
    ordered = {k: clean[k] for k in LIST_PARAMS if k in clean}
    return ListQuery(filters=TaskFilters(**fields), cursor=cursor, params=ordered, errors=tuple(errors))


def task_page(*, query: ListQuery, limit: int = PAGE_SIZE) -> TaskPage:
    """One page of the list, newest first (keyset pagination on (created_at, id)), without the columns a
    row does not show: they may hold megabytes each (the detail page reads them)."""
    return task_list(filters=query.filters, limit=limit, cursor=query.cursor, leave_out=LIST_LEFT_OUT)


@dataclass(frozen=True)
class StatusCount:
    status: str
    count: int
    at_least: bool  # the true count may be higher (see task_status_counts)

    @property
    def label(self) -> str:
        return f"{self.count:,}+" if self.at_least else f"{self.count:,}"


@dataclass(frozen=True)
class StatusCounts:
    counts: list[StatusCount]
    scanned: int | None  # None: counted per status; else the newest `scanned` matching rows were counted


def task_status_counts(*, filters: TaskFilters, cap: int = COUNT_CAP, scan_cap: int = COUNT_SCAN_CAP) -> StatusCounts:
    """How many tasks of each status match the filters (the status filter aside), with bounded work.

    Without filters, or with a time range only: one COUNT per status over the (status, created_at)
    index, reading the index alone, exact up to `cap` ("10,000+" past it). With a function, pool,
    mode, id or error filter: the statuses of the newest `scan_cap` matching rows (one range scan of that
    filter's index), exact when fewer match, else lower bounds.
    """
    base = task_queryset(filters=replace(filters, status=None)).order_by()
    index_only = not (filters.function or filters.pool or filters.execution_mode or filters.id_prefix
                      or filters.error_type or filters.error_contains)
    if index_only:
        counts = []
        for status in TaskStatus.values:
            # `created_at` is in the index: the count never reads the table.
            n = base.filter(status=status).values("created_at")[: cap + 1].count()
            counts.append(StatusCount(status=status, count=min(n, cap), at_least=n > cap))
        return StatusCounts(counts=counts, scanned=None)
    newest = base.order_by("-created_at").values("status")[: scan_cap + 1]
    sql, params = newest.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT status, COUNT(*) FROM ({sql}) newest GROUP BY status", params)
        tally = {status: int(n) for status, n in cursor.fetchall()}
    truncated = sum(tally.values()) > scan_cap
    return StatusCounts(
        counts=[StatusCount(status=s, count=tally.get(s, 0), at_least=truncated) for s in TaskStatus.values],
        scanned=scan_cap if truncated else None,
    )


def tasks_touch_filters(*, task_ids: list[str], filters: TaskFilters) -> bool:
    """Whether any of these (changed) tasks matches the filters, the status filter aside."""
    return task_queryset(filters=replace(filters, status=None)).filter(id__in=task_ids).exists()


def task_function_names() -> list[str]:
    """Task names for the function filter's suggestions: the registered ones (no scan of the table)."""
    try:
        return sorted(registered_tasks())
    except Exception:
        return []


# --- one task -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskStory:
    task: Task
    args_json: str
    result_json: str | None
    result_object: ObjectRef | None  # [objects] a result stored in the object store: offered for download
    result_image: bool  # [objects] ... and shown inline (a raster image)
    ancestors: list[Task]  # oldest first, ending with the task this one retried
    retries: list[Task]  # newest first
    timeline: list[tuple[str, datetime | None]]
    past_attempts: list[TaskAttempt]  # attempts that ended without finishing the task, oldest first


def pretty_json(value: Any) -> str:
    """JSON for people: indented, unicode kept. The template escapes it."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def task_story(*, task: Task) -> TaskStory:
    """Everything the detail page shows: pretty args and result, the retry chain both ways, the timeline."""
    ancestors: list[Task] = []
    parent_id = task.retry_of_id
    seen = {task.id}
    while parent_id is not None and parent_id not in seen and len(ancestors) < RETRY_CHAIN_MAX:
        parent = Task.objects.filter(id=parent_id).first()
        if parent is None:
            break
        ancestors.append(parent)
        seen.add(parent.id)
        parent_id = parent.retry_of_id
    retries = list(Task.objects.filter(retry_of_id=task.id).order_by("-created_at", "-id")[:RETRY_CHAIN_MAX])
    timeline = [
        ("created", task.created_at),
        ("queued", task.queued_at),
        ("started", task.started_at),
        ("finished", task.completed_at),
    ]
    if task.execution_mode == "sync":
        timeline.pop(1)  # sync tasks run at once, never through a queue
    return TaskStory(
        task=task,
        args_json=pretty_json(task.args),
        result_json=None if task.result is None else pretty_json(result_shown(task)),
        result_object=(ref := ObjectRef.of(task.result)),
        result_image=ref is not None and ref.content_type in INLINE_IMAGE_TYPES,
        ancestors=list(reversed(ancestors)),
        retries=retries,
        timeline=timeline,
        past_attempts=list(task.past_attempts.order_by("attempt")[:50]),
    )


def task_touched(*, task_id: uuid.UUID, task_ids: list[str]) -> bool:
    """Whether a batch of changed tasks concerns this task's page: the task itself or a retry of it."""
    if str(task_id) in task_ids:
        return True
    return Task.objects.filter(id__in=task_ids, retry_of_id=task_id).exists()


# --- overview -----------------------------------------------------------------------------------


@dataclass
class FunctionStats:
    function_name: str
    total: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    active: int = 0
    percentiles: dict[int, float] = field(default_factory=dict)  # of completed runs' duration_ms

    @property
    def failure_rate(self) -> float | None:
        finished = self.completed + self.failed
        return self.failed / finished if finished else None

    @property
    def p50_ms(self) -> float | None:
        return self.percentiles.get(50)

    @property
    def p95_ms(self) -> float | None:
        return self.percentiles.get(95)


@dataclass(frozen=True)
class MinuteBucket:
    start: datetime
    counts: dict[str, int]
    sampled: bool  # False: older than the rows the overview read (see Overview.truncated)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Overview:
    since: datetime
    until: datetime
    buckets: list[MinuteBucket]
    functions: list[FunctionStats]
    rows_read: int
    truncated: bool  # more rows than OVERVIEW_MAX_ROWS in the window: only the newest were read
    oldest_read: datetime | None
    status_totals: dict[str, int]


def task_overview(*, now: datetime, window: timedelta = OVERVIEW_WINDOW,
                  max_rows: int = OVERVIEW_MAX_ROWS) -> Overview:
    """Tasks per minute by status, and duration percentiles and failure rate per function, over `window`.

    Reads at most `max_rows` of the window's newest rows (one range scan of the created_at index);
    when the window holds more, the older minutes are marked as not read rather than shown as empty.
    Each row's minute comes from the database as text ("YYYY-MM-DD HH:MM", parsed once per minute) and
    the rows as the driver returns them: turning 20,000 rows' created_at into datetimes took half of the
    overview's time at a million rows (bench/dashboard_scale.py), and grouping in SQL (GROUP BY minute,
    window functions for the percentiles) was slower on SQLite than this one scan.
    """
    since = now - window
    newest = Task.objects.filter(created_at__gte=since, created_at__lte=now).order_by("-created_at", "-id")
    minute = Substr(Cast("created_at", output_field=CharField()), 1, 16)
    rows = _raw_rows(newest.annotate(minute=minute)
                     .values_list("minute", "status", "function_name", "duration_ms")[: max_rows + 1])
    truncated = len(rows) > max_rows
    rows = rows[:max_rows]
    oldest_read = newest.values_list("created_at", flat=True)[max_rows - 1] if truncated else None
    first_minute = since.replace(second=0, microsecond=0)
    minutes = int((now - first_minute).total_seconds() // 60) + 1
    minute_index: dict[str, int] = {}
    per_minute: dict[int, Counter[str]] = defaultdict(Counter)
    functions: dict[str, FunctionStats] = {}
    durations: dict[str, list[float]] = defaultdict(list)
    totals: Counter[str] = Counter()
    for minute_text, status, function_name, duration_ms in rows:
        index = minute_index.get(minute_text)
        if index is None:
            start = datetime.fromisoformat(minute_text).replace(tzinfo=UTC)
            index = minute_index[minute_text] = int((start - first_minute).total_seconds() // 60)
        per_minute[index][status] += 1
        totals[status] += 1
        stats = functions.get(function_name)
        if stats is None:
            stats = functions[function_name] = FunctionStats(function_name)
        stats.total += 1
        if status == TaskStatus.COMPLETED:
            stats.completed += 1
            if duration_ms is not None:
                durations[function_name].append(float(duration_ms))
        elif status == TaskStatus.FAILED:
            stats.failed += 1
        elif status == TaskStatus.CANCELLED:
            stats.cancelled += 1
        elif status in ACTIVE_STATUSES:
            stats.active += 1
    for function_name, values in durations.items():
        functions[function_name].percentiles = {pct: percentile(values, pct) for pct in PERCENTILES}
    buckets = []
    for index in range(minutes):
        start = first_minute + timedelta(minutes=index)
        sampled = not truncated or oldest_read is None or start + timedelta(minutes=1) > oldest_read
        buckets.append(MinuteBucket(start=start, counts=dict(per_minute.get(index, {})), sampled=sampled))
    return Overview(
        since=since,
        until=now,
        buckets=buckets[-60:],
        functions=sorted(functions.values(), key=lambda s: (-s.total, s.function_name)),
        rows_read=len(rows),
        truncated=truncated,
        oldest_read=oldest_read,
        status_totals={s: totals.get(s, 0) for s in TaskStatus.values},
    )


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


def _raw_rows(rows: QuerySet[Any, Any]) -> list[tuple[Any, ...]]:
    """The query's rows as the database driver returns them, without Django's converters."""
    sql, params = rows.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def pool_depths(*, broker: Broker | None, pools: list[str],
                timeout_s: float = DEPTH_TIMEOUT_S) -> dict[str, PoolDepth] | None:
    """Pending and in-flight messages per NATS pool, from JetStream; None when NATS cannot say."""
    if not pools:
        return {}
    if broker is None:
        return None

    async def read(js: Any, nc: Any) -> dict[str, PoolDepth]:
        return {pool: await pool_depth(js, pool) for pool in pools}

    try:
        return dict(broker.call(read, timeout_s))
    except BrokerError as exc:
        logger.info("queue depth unknown: %s", exc)
    except Exception as exc:  # a JetStream API error: the page says "unknown" rather than fail
        logger.warning("queue depth unknown: JetStream answered %r", exc)
    return None
