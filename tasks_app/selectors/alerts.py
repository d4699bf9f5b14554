"""Reads: what an alert rule measures, and what the Alerts page and the banner show.

Every measure is bounded and served by an index of the task table, so evaluating a rule costs the same
at a million rows as at a thousand:

- failure rate: the newest RATE_SAMPLE_MAX tasks of the function created within the window, read
  newest first on `idx_function_name` (function_name, created_at); a busier function is judged on its
  newest tasks;
- backlog: pending + queued rows of the pool, counted on `idx_pool_status` (pool, status, created_at)
  and stopping at COUNT_MAX;
- oldest waiting: the first rows of that same index per waiting status (a seek, not a sort);
- no worker: the backlog, then live workers (counted by the caller: worker rows belong to pools_app).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from tasks_app.alert_models import AlertKind, AlertRule, AlertState, WebhookDelivery, WebhookTarget
from tasks_app.models import Task, TaskStatus

RATE_SAMPLE_MAX = 10_000
COUNT_MAX = 100_000
# The oldest waiting task is found among this many oldest-created rows per status (a delayed task waits
# from its run_at, not from its creation, so the oldest created is not always the longest waiting).
OLDEST_SCAN = 20
WAITING = (TaskStatus.PENDING, TaskStatus.QUEUED)
BANNER_MAX = 5
DELIVERIES_SHOWN = 50

LiveWorkers = Callable[[str], int]  # pool -> live workers in it


@dataclass(frozen=True)
class Measure:
    value: float | None  # None: no verdict (too few finished tasks); the rule keeps its state
    firing: bool
    message: str


def function_outcomes(*, function: str, since: datetime, sample_max: int = RATE_SAMPLE_MAX) -> Counter[str]:
    """How many of `function`'s tasks created since `since` (the newest `sample_max`) are in each status."""
    statuses = (Task.objects.filter(function_name=function, created_at__gte=since)
                .order_by("-created_at").values_list("status", flat=True)[:sample_max])
    return Counter(str(status) for status in statuses)


def pool_waiting_count(*, pool: str, up_to: int = COUNT_MAX) -> int:
    """Pending + queued rows of `pool`, counted no further than `up_to`."""
    # No ORDER BY (the model's default would sort the whole backlog before the LIMIT): any `up_to` rows will do;
    # and only indexed columns, so the count reads the index alone (the rows' ids are not in it).
    return Task.objects.filter(pool=pool, status__in=WAITING).order_by().values_list("pool")[:up_to].count()


def pool_oldest_waiting_s(*, pool: str, now: datetime) -> float | None:
    """How long the longest-waiting task of `pool` has waited (since it was created, or since its run_at)."""
    starts: list[datetime] = []
    for status in WAITING:
        rows = (Task.objects.filter(pool=pool, status=status).order_by("created_at")
                .values_list("created_at", "run_at")[:OLDEST_SCAN])
        starts += [max(created, run_at) if run_at is not None else created for created, run_at in rows]
    if not starts:
        return None
    return max(0.0, (now - min(starts)).total_seconds())


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds % 60 == 0 else f"{seconds:g} s"


def alert_measure(*, rule: AlertRule, now: datetime, live_workers: LiveWorkers) -> Measure:
    """What `rule` measures now, and whether that is above its threshold."""
    if rule.kind == AlertKind.FAILURE_RATE:
        outcomes = function_outcomes(function=rule.function_name, since=now - timedelta(seconds=rule.window_s))
        failed, finished = outcomes[TaskStatus.FAILED], outcomes[TaskStatus.FAILED] + outcomes[TaskStatus.COMPLETED]
        window = _minutes(rule.window_s)
        if finished == 0 or finished < rule.min_finished:
            return Measure(None, False, f"{finished} {rule.function_name} task(s) finished in the last {window}; "
                                        f"no verdict below {rule.min_finished}")
        rate = 100.0 * failed / finished
        return Measure(rate, rate > rule.threshold,
                       f"{rate:.1f}% of {finished} {rule.function_name} tasks failed in the last {window} "
                       f"(threshold {rule.threshold:g}%)")
    if rule.kind == AlertKind.BACKLOG:
        waiting = pool_waiting_count(pool=rule.pool)
        shown = f"{waiting}{'+' if waiting >= COUNT_MAX else ''}"
        return Measure(float(waiting), waiting > rule.threshold,
                       f"{shown} task(s) wait in pool {rule.pool} (threshold {rule.threshold:g})")
    if rule.kind == AlertKind.OLDEST_WAITING:
        age = pool_oldest_waiting_s(pool=rule.pool, now=now)
        if age is None:
            return Measure(0.0, False, f"no task waits in pool {rule.pool}")
        return Measure(age, age > rule.threshold,
                       f"the oldest waiting task of pool {rule.pool} has waited {age:.0f} s "
                       f"(threshold {rule.threshold:g} s)")
    if rule.kind == AlertKind.NO_WORKER:
        waiting = pool_waiting_count(pool=rule.pool, up_to=1000)
        if waiting == 0:
            return Measure(0.0, False, f"no task waits in pool {rule.pool}")
        live = live_workers(rule.pool)
        if live:
            return Measure(0.0, False, f"{live} live worker(s) in pool {rule.pool}")
        return Measure(float(waiting), True, f"{waiting} task(s) wait in pool {rule.pool} and no worker is live")
    return Measure(None, False, f"unknown kind {rule.kind!r}")


# --- the Alerts page and the banner ---------------------------------------------------------------------


def alerts_firing(*, limit: int = BANNER_MAX) -> list[AlertRule]:
    """The enabled rules firing now, longest firing first (served by `idx_alert_state`)."""
    return list(AlertRule.objects.filter(state=AlertState.FIRING, enabled=True)
                .order_by("state_changed_at", "name")[:limit])


def alerts_firing_count() -> int:
    return AlertRule.objects.filter(state=AlertState.FIRING, enabled=True).count()


def alert_rules() -> list[AlertRule]:
    return list(AlertRule.objects.select_related("target").order_by("name"))


def webhook_targets() -> list[WebhookTarget]:
    return list(WebhookTarget.objects.order_by("name"))


def webhook_deliveries_recent(*, limit: int = DELIVERIES_SHOWN) -> list[WebhookDelivery]:
    """The newest deliveries (alerts and callbacks), newest first, without their bodies."""
    return list(WebhookDelivery.objects.select_related("target", "rule").defer("payload")
                .order_by("-created_at", "-id")[:limit])
