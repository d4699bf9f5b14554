"""Alert rules evaluated in this process: what each kind measures, when it fires and clears, that a change
notifies once however many schedulers evaluate, and that each measure reads an index."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tasks_app.alert_models import AlertKind, AlertRule, AlertState, WebhookDelivery, WebhookTarget
from tasks_app.models import Task, TaskStatus
from tasks_app.selectors.alerts import alert_measure, alerts_firing, pool_waiting_count
from tasks_app.services.alerts import _change_state, alert_rule_save, alerts_evaluate

pytestmark = pytest.mark.django_db

NO_WORKERS = {"live": 0}


def live_workers(pool: str) -> int:
    return NO_WORKERS["live"]


def tasks(n: int, *, status: str, function: str = "flaky", pool: str = "async", age_s: float = 1.0,
          **fields: Any) -> None:
    now = timezone.now()
    Task.objects.bulk_create([
        Task(function_name=function, status=status, pool=pool, execution_mode="async", timeout_ms=1000,
             created_at=now - timedelta(seconds=age_s, microseconds=i), args={}, **fields)
        for i in range(n)
    ])


@pytest.fixture
def target() -> WebhookTarget:
    return WebhookTarget.objects.create(name="ops", url="http://93.184.216.34/hook")


def rule(**fields: Any) -> AlertRule:
    made = AlertRule(**{"name": "r", "kind": AlertKind.FAILURE_RATE, "function_name": "flaky", "threshold": 20,
                        "window_s": 600, "min_finished": 5, **fields})
    made.full_clean()
    return alert_rule_save(rule=made)


def state(made: AlertRule) -> str:
    return AlertRule.objects.get(id=made.id).state


def notifications() -> list[tuple[str, dict]]:
    return [(d.event, json.loads(d.payload)) for d in WebhookDelivery.objects.order_by("id")]


def test_failure_rate_fires_above_its_threshold_and_clears_below(target: WebhookTarget) -> None:
    made = rule(target=target)
    tasks(7, status=TaskStatus.COMPLETED)
    tasks(3, status=TaskStatus.FAILED)
    tasks(50, status=TaskStatus.FAILED, age_s=700)  # outside the window
    tasks(50, status=TaskStatus.FAILED, function="other")
    assert alerts_evaluate(live_workers=live_workers) == 1
    row = AlertRule.objects.get(id=made.id)
    assert (row.state, row.value) == ("firing", 30.0)
    assert row.message == "30.0% of 10 flaky tasks failed in the last 10 min (threshold 20%)"
    assert alerts_evaluate(live_workers=live_workers) == 0, "still firing: no second notification"
    tasks(10, status=TaskStatus.COMPLETED)
    assert alerts_evaluate(live_workers=live_workers) == 1
    assert state(made) == "ok"
    [(fired, body), (cleared, body2)] = notifications()
    assert (fired, cleared) == ("alert.firing", "alert.resolved")
    assert body["rule"]["name"] == "r" and body["value"] == 30.0 and body["state"] == "firing"
    assert body2["state"] == "ok" and body2["value"] == 15.0
    assert WebhookDelivery.objects.filter(target=target, url=target.url).count() == 2


def test_too_few_finished_tasks_give_no_verdict_and_keep_the_state() -> None:
    made = rule(min_finished=5)
    tasks(4, status=TaskStatus.FAILED)
    tasks(20, status=TaskStatus.RUNNING)
    assert alerts_evaluate(live_workers=live_workers) == 0
    row = AlertRule.objects.get(id=made.id)
    assert row.state == "ok" and row.value is None and "no verdict below 5" in row.message
    AlertRule.objects.filter(id=made.id).update(state=AlertState.FIRING)
    assert alerts_evaluate(live_workers=live_workers) == 0 and state(made) == "firing"


def test_backlog_counts_pending_and_queued_of_its_pool() -> None:
    made = rule(name="backlog", kind=AlertKind.BACKLOG, pool="async", function_name="", threshold=3)
    tasks(2, status=TaskStatus.QUEUED)
    tasks(1, status=TaskStatus.PENDING)
    tasks(5, status=TaskStatus.RUNNING)
    tasks(5, status=TaskStatus.QUEUED, pool="gpu")
    alerts_evaluate(live_workers=live_workers)
    assert (state(made), AlertRule.objects.get(id=made.id).value) == ("ok", 3.0)
    tasks(1, status=TaskStatus.QUEUED)
    alerts_evaluate(live_workers=live_workers)
    assert state(made) == "firing" and not WebhookDelivery.objects.exists(), "no target: the banner only"
    assert [r.name for r in alerts_firing()] == ["backlog"]


def test_oldest_waiting_counts_a_delayed_task_from_its_run_at() -> None:
    made = rule(name="age", kind=AlertKind.OLDEST_WAITING, pool="async", function_name="", threshold=60)
    tasks(1, status=TaskStatus.QUEUED, age_s=30)
    tasks(1, status=TaskStatus.COMPLETED, age_s=3600)
    # Created two hours ago to run 10 s ago: it has waited 10 s, not two hours.
    tasks(1, status=TaskStatus.PENDING, age_s=7200, run_at=timezone.now() - timedelta(seconds=10))
    now = timezone.now()
    measured = alert_measure(rule=made, now=now, live_workers=live_workers)
    assert measured.value is not None and 29 <= measured.value < 60 and not measured.firing
    tasks(1, status=TaskStatus.PENDING, age_s=120)
    alerts_evaluate(live_workers=live_workers)
    assert state(made) == "firing"


def test_no_worker_fires_only_while_tasks_wait_and_no_worker_is_live() -> None:
    made = rule(name="workers", kind=AlertKind.NO_WORKER, pool="async", function_name="")
    alerts_evaluate(live_workers=live_workers)
    assert state(made) == "ok"
    tasks(2, status=TaskStatus.QUEUED)
    NO_WORKERS["live"] = 1
    alerts_evaluate(live_workers=live_workers)
    assert state(made) == "ok"
    NO_WORKERS["live"] = 0
    alerts_evaluate(live_workers=live_workers)
    assert state(made) == "firing"
    assert AlertRule.objects.get(id=made.id).message == "2 task(s) wait in pool async and no worker is live"


def test_a_change_seen_by_two_schedulers_notifies_once(target: WebhookTarget) -> None:
    made = rule(target=target)
    stale = AlertRule.objects.select_related("target").get(id=made.id)  # the second scheduler's read
    tasks(10, status=TaskStatus.FAILED)
    assert alerts_evaluate(live_workers=live_workers) == 1
    measure = alert_measure(rule=stale, now=timezone.now(), live_workers=live_workers)
    assert not _change_state(rule=stale, to=AlertState.FIRING, measure=measure, now=timezone.now())
    assert [event for event, _ in notifications()] == ["alert.firing"]


def test_a_disabled_rule_is_not_evaluated_and_leaves_the_banner() -> None:
    made = rule(name="backlog", kind=AlertKind.BACKLOG, pool="async", function_name="", threshold=0)
    tasks(1, status=TaskStatus.QUEUED)
    alerts_evaluate(live_workers=live_workers)
    assert alerts_firing()
    made.enabled = False
    alert_rule_save(rule=made)
    assert state(made) == "ok" and not alerts_firing()
    assert alerts_evaluate(live_workers=live_workers) == 0


@pytest.mark.parametrize(("fields", "field"), [
    ({"kind": AlertKind.FAILURE_RATE, "function_name": ""}, "function_name"),
    ({"kind": AlertKind.FAILURE_RATE, "threshold": 100}, "threshold"),
    ({"kind": AlertKind.FAILURE_RATE, "window_s": 5}, "window_s"),
    ({"kind": AlertKind.BACKLOG, "pool": ""}, "pool"),
    ({"kind": AlertKind.OLDEST_WAITING, "pool": "async", "threshold": -1}, "threshold"),
])
def test_a_rule_missing_what_its_kind_needs_is_refused_on_that_field(fields: dict, field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        rule(**fields)
    assert field in refused.value.message_dict


def explain(sql: str, params: list[Any]) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        return " ".join(str(row) for row in cursor.fetchall())


def test_each_measure_reads_an_index() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("the plans are checked on SQLite; PostgreSQL's planner picks by table statistics")
    since = timezone.now() - timedelta(minutes=10)
    rate = (Task.objects.filter(function_name="f", created_at__gte=since).order_by("-created_at")
            .values_list("status", flat=True)[:10_000])
    oldest = Task.objects.filter(pool="p", status="queued").order_by("created_at").values_list("created_at")[:20]
    for query, index in ((rate, "idx_function_name"), (oldest, "idx_pool_status")):
        plan = explain(*query.query.sql_with_params())
        assert index in plan and "TEMP B-TREE" not in plan, plan
    with CaptureQueriesContext(connection) as counted:
        pool_waiting_count(pool="p")
    plan = explain(counted.captured_queries[0]["sql"], [])
    assert "idx_pool_status" in plan and "TEMP B-TREE" not in plan, plan
