"""The dashboard's pages through Django's test client: login, filters, pagination, detail, buttons, escaping."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tasks_app.models import Task
from tests.dashboard.conftest import XSS_IMG, XSS_SCRIPT

pytestmark = pytest.mark.django_db

PAGES = ["/", "/ui/overview", "/ui/dead-letters", "/ui/workers", "/ui/pools"]


def row_ids(html: str) -> list[str]:
    return re.findall(r'<tr id="task-([0-9a-f-]{36})"', html)


# --- login -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [*PAGES, f"/ui/tasks/{uuid.uuid4()}"])
def test_every_page_needs_a_login(client, path) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


def test_the_json_api_static_files_and_admin_keep_their_own_rules(client) -> None:
    assert client.get("/tasks").status_code == 200
    assert client.get("/api/openapi.json").status_code == 200
    assert client.get("/static/neutrino.css").status_code == 200
    admin = client.get("/admin/")
    assert admin.status_code == 302 and admin["Location"].startswith("/admin/login/")
    assert client.get("/login/").status_code == 200


def test_an_htmx_request_without_a_session_is_sent_to_the_login_page_whole(client) -> None:
    response = client.get("/", headers={"HX-Request": "true", "HX-Target": "task-list"})
    assert response["HX-Redirect"].startswith("/login/?next=")


def test_login_and_logout(client, staff_user) -> None:
    staff_user.set_password("pw-ada-123")
    staff_user.save()
    response = client.post("/login/", {"username": "ada", "password": "pw-ada-123"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_a_wrong_password_is_refused(client, staff_user) -> None:
    staff_user.set_password("pw-ada-123")
    staff_user.save()
    response = client.post("/login/", {"username": "ada", "password": "nope"})
    assert response.status_code == 200 and b"didn't match" in response.content
    assert client.get("/").status_code == 302


# --- task list ---------------------------------------------------------------------------------


def test_list_shows_newest_first_with_counters(staff_client, make_task) -> None:
    old = make_task(function_name="alpha", status="failed", age_s=120)
    new = make_task(function_name="beta", status="running", progress=0.4, progress_message="step 2 of 5")
    html = staff_client.get("/").content.decode()
    assert row_ids(html) == [str(new.id), str(old.id)]
    assert re.search(r'data-status="failed"><span class="counter-label">failed</span>\s*'
                     r'<span class="counter-value">1</span>', html)
    assert 'aria-valuenow="40"' in html  # the running task's progress bar
    assert "<html" in html


def test_the_list_reads_no_args_result_error_or_traceback(staff_client, make_task) -> None:
    blob = "y" * 50_000
    made = [make_task(status="failed", args={"blob": blob}, result=blob, error=blob, traceback=blob)
            for _ in range(5)]
    with CaptureQueriesContext(connection) as queries:
        response = staff_client.get("/")
    assert response.status_code == 200 and row_ids(response.content.decode()) == [str(t.id) for t in reversed(made)]
    table = Task._meta.db_table
    for column in ("args", "result", "error", "traceback"):
        assert not [q for q in queries.captured_queries if f'"{table}"."{column}"' in q["sql"]], column
    assert len(response.content) < 200_000  # the page, not 5 x 200 KB of columns it does not show


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "failed"}, {"f1"}),
        ({"function": "beta"}, {"b1", "old"}),
        ({"pool": "async"}, {"q1"}),
        ({"mode": "async"}, {"q1"}),
        ({"range": "1h"}, {"f1", "b1", "q1"}),
        ({"status": "completed", "function": "beta"}, {"b1", "old"}),
        ({"status": "completed", "function": "beta", "range": "1h"}, {"b1"}),
    ],
)
def test_filters(staff_client, make_task, params, expected) -> None:
    tasks = {
        "f1": make_task(function_name="alpha", status="failed"),
        "b1": make_task(function_name="beta", status="completed"),
        "q1": make_task(function_name="gamma", status="queued", pool="async", execution_mode="async"),
        "old": make_task(function_name="beta", status="completed", age_s=3 * 3600),
    }
    html = staff_client.get("/", params).content.decode()
    assert set(row_ids(html)) == {str(tasks[key].id) for key in expected}


def test_time_range_between_two_moments(staff_client, make_task) -> None:
    inside = make_task(age_s=2 * 3600)
    make_task(age_s=5 * 3600)
    make_task(age_s=60)
    now = timezone.now()
    after = (now - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M")
    before = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    html = staff_client.get("/", {"after": after, "before": before}).content.decode()
    assert row_ids(html) == [str(inside.id)]


def test_search_by_id_and_prefix(staff_client, make_task) -> None:
    wanted = make_task()
    make_task()
    for q in (str(wanted.id), str(wanted.id)[:8], str(wanted.id)[:8].upper()):
        assert row_ids(staff_client.get("/", {"q": q}).content.decode()) == [str(wanted.id)]


def test_bad_filter_values_are_reported_not_raised(staff_client, make_task) -> None:
    make_task()
    response = staff_client.get("/", {"status": "bogus", "q": "not-an-id!", "cursor": "garbage", "after": "soon"})
    html = response.content.decode()
    assert response.status_code == 200
    assert "unknown status" in html and "search takes a task id" in html
    assert "page link is invalid" in html and "is not a date and time" in html
    assert len(row_ids(html)) == 1


def test_keyset_pagination_walks_every_task_once(staff_client, make_task) -> None:
    made = [make_task(function_name="pager") for _ in range(60)]
    first = staff_client.get("/", {"function": "pager"}).content.decode()
    assert row_ids(first) == [str(t.id) for t in reversed(made)][:50]
    older = re.search(r'href="(/\?[^"]*cursor=[^"]+)"[^>]*rel="next"', first)
    assert older, "the first page links to older tasks"
    href = older.group(1).replace("&amp;", "&")
    assert "function=pager" in href
    second = staff_client.get(href).content.decode()
    assert row_ids(second) == [str(t.id) for t in reversed(made)][50:]
    assert 'rel="next"' not in second and "← Newest" in second


def test_htmx_gets_only_the_list_partial_and_history_restores_get_the_page(staff_client, make_task) -> None:
    make_task()
    partial = staff_client.get("/", headers={"HX-Request": "true", "HX-Target": "task-list"})
    body = partial.content.decode()
    assert body.lstrip().startswith('<div id="task-list"') and "<html" not in body
    assert "HX-Request" in partial["Vary"]
    restore = staff_client.get("/", headers={"HX-Request": "true", "HX-History-Restore-Request": "true",
                                             "HX-Target": "task-list"})
    assert "<html" in restore.content.decode()


def test_filter_form_pushes_its_url_and_the_list_connects_its_websocket(staff_client, make_task, settings) -> None:
    settings.NEUTRINO_WS_PORT = 8101
    html = staff_client.get("/", {"status": "failed", "function": "a&b"}).content.decode()
    assert 'hx-push-url="true"' in html and 'hx-get="/"' in html
    assert 'ws-connect="ws://testserver:8101/ws/dashboard/?view=list&amp;status=failed&amp;function=a%26b"' in html


def test_without_a_websocket_port_the_page_says_it_is_not_live(staff_client) -> None:
    html = staff_client.get("/").content.decode()
    assert "ws-connect" not in html and "not live" in html


# --- task detail -------------------------------------------------------------------------------


def test_detail_shows_everything_about_a_task(staff_client, make_task) -> None:
    first = make_task(function_name="boom", status="failed", error="ValueError: bad", error_type="ValueError",
                      traceback="Traceback (most recent call last):\n  ...", args={"message": "bad"})
    second = make_task(function_name="boom", status="failed", retry_of=first)
    third = make_task(function_name="boom", status="completed", retry_of=second, result={"rows": [1, 2]},
                      duration_ms=1234.5, worker_id="host:42", progress=1.0, progress_message="done")
    html = staff_client.get(f"/ui/tasks/{second.id}").content.decode()
    assert "retry of" in html and f'href="/ui/tasks/{first.id}"' in html
    assert "retried as" in html and f'href="/ui/tasks/{third.id}"' in html
    html = staff_client.get(f"/ui/tasks/{third.id}").content.decode()
    assert '&quot;rows&quot;: [\n    1,\n    2\n  ]' in html  # pretty JSON, escaped
    assert "1.23 s" in html and "host:42" in html and 'aria-valuenow="100"' in html and "done" in html
    for label in ("created", "started", "finished"):
        assert f'<span class="t-label">{label}</span>' in html
    html = staff_client.get(f"/ui/tasks/{first.id}").content.decode()
    assert "ValueError: bad" in html and "Traceback (most recent call last)" in html
    assert '&quot;message&quot;: &quot;bad&quot;' in html


def test_detail_timeline_lists_each_past_attempt_and_its_worker(staff_client, make_task) -> None:
    from django.utils import timezone

    from tasks_app.models import TaskAttempt

    task = make_task(function_name="flaky", status="completed", execution_mode="async", pool="async",
                     attempt=3, max_retries=3, worker_id="host:3")
    for attempt, outcome, worker in ((1, "retried", "host:1"), (2, "lost", "host:2")):
        TaskAttempt.objects.create(task=task, attempt=attempt, worker_id=worker, started_at=timezone.now(),
                                   ended_at=timezone.now(), outcome=outcome, error=f"<b>attempt {attempt} failed</b>")
    html = staff_client.get(f"/ui/tasks/{task.id}").content.decode()
    assert '<span class="t-label">attempt 1</span>' in html and "retried on" in html and "host:1" in html
    assert '<span class="t-label">attempt 2</span>' in html and "lost on" in html and "host:2" in html
    assert "3 of 4" in html and "host:3" in html
    assert "&lt;b&gt;attempt 1 failed&lt;/b&gt;" in html  # a task's error is text, never markup


def test_detail_of_an_unknown_task_is_404(staff_client) -> None:
    assert staff_client.get(f"/ui/tasks/{uuid.uuid4()}").status_code == 404


def test_detail_url_does_not_clash_with_the_json_api(staff_client, make_task) -> None:
    task = make_task()
    assert staff_client.get(f"/tasks/{task.id}")["Content-Type"].startswith("application/json")
    assert staff_client.get(f"/ui/tasks/{task.id}")["Content-Type"].startswith("text/html")


# --- buttons -----------------------------------------------------------------------------------


def test_staff_see_cancel_and_retry_others_see_no_buttons(staff_client, viewer_client, make_task,
                                                           staff_user, viewer_user) -> None:
    queued = make_task(status="queued", pool="async", execution_mode="async")
    done = make_task(status="completed")
    staff_client.force_login(staff_user)
    html = staff_client.get(f"/ui/tasks/{queued.id}").content.decode()
    assert 'id="cancel-button"' in html and 'id="retry-button"' in html
    html = staff_client.get(f"/ui/tasks/{done.id}").content.decode()
    assert 'id="cancel-button"' not in html and 'id="retry-button"' in html
    viewer_client.force_login(viewer_user)
    html = viewer_client.get(f"/ui/tasks/{queued.id}").content.decode()
    assert "cancel-button" not in html and "retry-button" not in html


@pytest.mark.parametrize("action", ["cancel", "retry"])
def test_non_staff_posts_are_403_and_change_nothing(viewer_client, make_task, action) -> None:
    task = make_task(status="queued", pool="async", execution_mode="async")
    response = viewer_client.post(f"/ui/tasks/{task.id}/{action}")
    assert response.status_code == 403
    assert Task.objects.count() == 1 and Task.objects.get().status == "queued"


def test_posts_without_a_csrf_token_are_refused(staff_user, make_task) -> None:
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    task = make_task(status="queued", pool="async", execution_mode="async")
    assert client.post(f"/ui/tasks/{task.id}/cancel").status_code == 403
    assert Task.objects.get(id=task.id).status == "queued"
    page = client.get(f"/ui/tasks/{task.id}").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    response = client.post(f"/ui/tasks/{task.id}/cancel", {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert Task.objects.get(id=task.id).status == "cancelled"


def test_cancel_button_cancels_and_says_so(staff_client, make_task) -> None:
    task = make_task(status="queued", pool="async", execution_mode="async")
    response = staff_client.post(f"/ui/tasks/{task.id}/cancel", follow=True)
    assert response.redirect_chain[-1][0] == f"/ui/tasks/{task.id}"
    task.refresh_from_db()
    assert task.status == "cancelled" and task.cancel_requested
    assert "is cancelled" in response.content.decode()


def test_cancel_of_a_finished_task_says_why_and_changes_nothing(staff_client, make_task) -> None:
    task = make_task(status="completed")
    response = staff_client.post(f"/ui/tasks/{task.id}/cancel", follow=True)
    assert "already finished" in response.content.decode()
    task.refresh_from_db()
    assert task.status == "completed"


def test_cancel_and_retry_are_post_only(staff_client, make_task) -> None:
    task = make_task(status="queued", pool="async", execution_mode="async")
    assert staff_client.get(f"/ui/tasks/{task.id}/cancel").status_code == 405
    assert staff_client.get(f"/ui/tasks/{task.id}/retry").status_code == 405


@pytest.mark.django_db(transaction=True)
def test_retry_button_runs_the_task_again_and_opens_the_new_one(staff_client, make_task, ledger_flush) -> None:
    failed = make_task(function_name="boom", status="failed", args={"message": "again"}, error="ValueError: x")
    response = staff_client.post(f"/ui/tasks/{failed.id}/retry")
    assert response.status_code == 302
    new_id = response["Location"].rsplit("/", 1)[1]
    assert new_id != str(failed.id)
    ledger_flush()
    retry = Task.objects.get(id=new_id)
    assert retry.retry_of_id == failed.id and retry.status == "failed" and "again" in retry.error
    page = staff_client.get(response["Location"]).content.decode()
    assert "retry of" in page and str(failed.id)[:8] in page
    assert "Retry of" in page  # the message


def test_retry_of_an_unregistered_function_says_so(staff_client, make_task) -> None:
    task = make_task(function_name="gone_function", status="failed")
    response = staff_client.post(f"/ui/tasks/{task.id}/retry", follow=True)
    assert "no task named" in response.content.decode()
    assert Task.objects.count() == 1


# --- escaping ----------------------------------------------------------------------------------


def test_task_strings_are_escaped_everywhere(staff_client, make_task) -> None:
    task = make_task(
        function_name=XSS_SCRIPT, status="failed", pool=XSS_IMG, worker_id=XSS_IMG,
        args={"a": XSS_SCRIPT, XSS_IMG: XSS_IMG}, result={"r": XSS_SCRIPT},
        error=XSS_IMG, error_type=XSS_SCRIPT, traceback=XSS_SCRIPT, progress=0.5, progress_message=XSS_IMG,
    )
    make_task(function_name="child", retry_of=task)
    for path in ("/", f"/ui/tasks/{task.id}", "/ui/overview", "/?function=" + XSS_SCRIPT):
        html = staff_client.get(path).content.decode()
        assert "<script>alert" not in html, path
        assert "<img src=x" not in html, path
        assert "&lt;script&gt;alert(&#x27;xss&#x27;)&lt;/script&gt;" in html, path


# --- overview, workers, pools ------------------------------------------------------------------


def test_overview_shows_the_chart_percentiles_failure_rate_and_unknown_depth(staff_client, make_task) -> None:
    for ms in (10, 20, 30, 40, 1000):
        make_task(function_name="timed", status="completed", duration_ms=ms, age_s=120)
    make_task(function_name="timed", status="failed", age_s=60)
    make_task(function_name="ancient", status="completed", age_s=2 * 3600)
    html = staff_client.get("/ui/overview").content.decode()
    assert "<svg" in html and 'class="seg seg-completed"' in html and 'class="seg seg-failed"' in html
    row = re.search(r'<td class="fn"><a [^>]*>timed</a></td>(.*?)</tr>', html, re.S).group(1)
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", row)
    assert cells == ["6", "1", "16.7 %", "30 ms", "1.00 s"]
    assert "ancient" not in html
    assert "unknown" in html  # no NATS in these tests: the depth is unknown, not zero


def test_overview_past_its_row_cap_reads_the_newest_rows_and_marks_older_minutes(make_task) -> None:
    from tasks_app.selectors.dashboard import task_overview

    now = timezone.now()
    ages = [30 * 60, 20 * 60, 10 * 60, 5 * 60, 60]  # minutes apart, oldest first
    tasks = [make_task(function_name="capped", status="completed", duration_ms=10 * (i + 1), age_s=age)
             for i, age in enumerate(ages)]
    overview = task_overview(now=now, max_rows=3)
    assert overview.truncated and overview.rows_read == 3
    assert overview.oldest_read == tasks[2].created_at  # the third newest: the oldest row read
    sampled = {bucket.start: bucket.sampled for bucket in overview.buckets}
    assert not sampled[tasks[1].created_at.replace(second=0, microsecond=0)]
    assert sampled[tasks[3].created_at.replace(second=0, microsecond=0)]
    assert overview.status_totals["completed"] == 3
    (stats,) = overview.functions
    assert (stats.total, stats.p50_ms, stats.p95_ms) == (3, 40.0, 50.0)  # of the three newest: 30, 40, 50
    counted = sum(bucket.counts.get("completed", 0) for bucket in overview.buckets)
    assert counted == 3


def test_workers_page_shows_live_lost_and_stopped_workers(staff_client) -> None:
    from pools_app.models import Worker

    now = timezone.now()
    common = {"host": "box", "concurrency": 4, "started_at": now - timedelta(minutes=5)}
    Worker.objects.create(worker_id="box:1", pool="async", pid=1, running=2, gpus=["GPU-0"],
                          last_heartbeat=now, **common)
    Worker.objects.create(worker_id="box:2", pool="async", pid=2, last_heartbeat=now - timedelta(seconds=60),
                          **common)
    Worker.objects.create(worker_id="box:3", pool="gpu", pid=3, last_heartbeat=now - timedelta(minutes=2),
                          stopped_at=now - timedelta(minutes=1), **common)
    Worker.objects.create(worker_id="box:4", pool="gpu", pid=4, last_heartbeat=now - timedelta(days=2), **common)
    html = staff_client.get("/ui/workers").content.decode()
    states = dict(re.findall(r'worker-state-(\w+)">\w+</span></td>\s*<td class="mono">([^<]+)<', html))
    assert states == {"live": "box:1", "lost": "box:2", "stopped": "box:3"} or {
        v: k for k, v in states.items()} == {"box:1": "live", "box:2": "lost", "box:3": "stopped"}
    assert "box:4" not in html and "GPU-0" in html


def test_pools_page_lists_pools_with_their_workers(staff_client, default_pools) -> None:
    from pools_app.models import Worker

    now = timezone.now()
    Worker.objects.create(worker_id="box:9", pool="async", host="box", pid=9, concurrency=2, started_at=now,
                          last_heartbeat=now)
    html = staff_client.get("/ui/pools").content.decode()
    for name in ("fast", "async", "gpu"):
        assert f"<h2>{name}</h2>" in html
    assert "box:9" in html and "runs in the HTTP servers" in html and "unknown" in html


@pytest.mark.parametrize(("path", "target"), [("/ui/workers", "workers-live"), ("/ui/overview", "overview")])
def test_heartbeat_and_aggregate_pages_redraw_themselves(staff_client, path, target) -> None:
    page = staff_client.get(path).content.decode()
    assert f'id="{target}"' in page and 'hx-trigger="every ' in page and "<html" in page
    partial = staff_client.get(path, headers={"HX-Request": "true", "HX-Target": target}).content.decode()
    assert f'id="{target}"' in partial and "<html" not in partial


# --- dead letters --------------------------------------------------------------------------------


def test_dead_letters_group_queued_failures_by_function_and_error(staff_client, make_task) -> None:
    for age in (300, 200, 100):
        make_task(function_name="ingest", status="failed", error_type="TimeoutError", error=f"slow {age}",
                  execution_mode="async", pool="async", age_s=age, completed_at=timezone.now() - timedelta(seconds=age))
    make_task(function_name="ingest", status="failed", error_type="WorkerLost", error="worker died",
              execution_mode="async", pool="async", completed_at=timezone.now())
    make_task(function_name="ingest", status="expired", error="not started before its expiry",
              execution_mode="async", pool="async", completed_at=timezone.now())
    make_task(function_name="add", status="failed", error_type="ValueError", execution_mode="sync")  # left out
    make_task(function_name="ingest", status="completed", execution_mode="async", pool="async")  # not dead
    make_task(function_name="old", status="failed", error_type="X", execution_mode="async", pool="async",
              age_s=10 * 86400, completed_at=timezone.now() - timedelta(days=10))
    html = staff_client.get("/ui/dead-letters").content.decode()
    row = r'data-function="([^"]+)" data-error-type="([^"]*)">.*?class="num dead-count">(\d+)<'
    groups = re.findall(row, html, re.S)
    assert groups == [("ingest", "TimeoutError", "3"), ("ingest", "", "1"), ("ingest", "WorkerLost", "1")]
    assert "slow 100" in html and "slow 300" not in html  # the latest error of the group
    assert "5 tasks in 3 groups" in html
    wider = staff_client.get("/ui/dead-letters?range=30d").content.decode()
    assert 'data-function="old"' in wider and 'data-function="add"' not in wider


def test_detail_shows_a_queued_task_s_priority_and_its_unique_window(staff_client, make_task) -> None:
    until = timezone.now() + timedelta(minutes=5)
    task = make_task(pool="async", execution_mode="async", status="queued", priority="high",
                     unique_key="report:abc", unique_until=until)
    html = staff_client.get(f"/ui/tasks/{task.id}").content.decode()
    assert re.search(r'id="task-priority">high<', html) and 'id="task-unique-until"' in html
    plain = make_task()  # a sync task waits in no queue: no priority shown
    html = staff_client.get(f"/ui/tasks/{plain.id}").content.decode()
    assert 'id="task-priority"' not in html and 'id="task-unique-until"' not in html
