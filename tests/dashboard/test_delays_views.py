"""Scheduled and expired tasks on the dashboard's pages (Django's test client): badges, counters, filters,
the run_at and expires_at of a task's page, and its Run now button."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from tasks_app.models import Task

pytestmark = pytest.mark.django_db


def scheduled(make_task, **fields):
    return make_task(function_name="dash_async_sleep", status="scheduled", pool="async", execution_mode="async",
                     attempt=0, args={"seconds": 0.1}, run_at=timezone.now() + timedelta(hours=1),
                     expires_at=timezone.now() + timedelta(hours=2), **fields)


def test_the_list_counts_filters_and_badges_the_new_statuses(staff_client, make_task) -> None:
    waiting = scheduled(make_task)
    gone = make_task(status="expired", pool="async", execution_mode="async", error_type="Expired")
    make_task(status="completed")
    html = staff_client.get("/").content.decode()
    for status in ("scheduled", "expired"):
        assert f'data-status="{status}"' in html, status  # a counter of each
        assert f'class="status status-{status}"' in html  # a badge of each
    assert re.search(rf'<tr id="task-{waiting.id}"[^>]*>.*?runs \d\d:\d\d:\d\d', html, re.S), "its run_at shows"
    only = staff_client.get("/?status=scheduled").content.decode()
    assert str(waiting.id) in only and str(gone.id) not in only
    assert 'value="scheduled"' in html and 'value="expired"' in html  # the status filter offers both


def test_a_scheduled_task_page_shows_its_times_and_buttons(staff_client, viewer_user, make_task) -> None:
    task = scheduled(make_task)
    html = staff_client.get(f"/ui/tasks/{task.id}").content.decode()
    assert 'id="task-run-at"' in html and 'id="task-expires-at"' in html
    assert 'id="run-now-button"' in html and 'id="cancel-button"' in html
    done = make_task(status="completed")
    assert 'id="run-now-button"' not in staff_client.get(f"/ui/tasks/{done.id}").content.decode()
    viewer = Client()
    viewer.force_login(viewer_user)
    assert 'id="run-now-button"' not in viewer.get(f"/ui/tasks/{task.id}").content.decode()


def test_run_now_needs_the_retry_permission_and_a_post(client, bare_staff_user, staff_client, make_task) -> None:
    task = scheduled(make_task)
    assert staff_client.get(f"/ui/tasks/{task.id}/run-now").status_code == 405
    client.force_login(bare_staff_user)
    assert client.post(f"/ui/tasks/{task.id}/run-now").status_code == 403
    assert Task.objects.get(id=task.id).status == "scheduled"


def test_run_now_queues_the_task_and_says_so(staff_client, make_task, live_settings) -> None:
    from tests.tasks_app.conftest import PrivateNats
    from workers.engine.topology import ensure_stream

    PrivateNats(live_settings).run(lambda js: ensure_stream(js, ["async", "gpu"]))
    task = scheduled(make_task)
    response = staff_client.post(f"/ui/tasks/{task.id}/run-now", follow=True)
    assert response.status_code == 200
    row = Task.objects.get(id=task.id)
    assert row.status in ("pending", "queued") and row.run_at <= timezone.now()
    assert "runs now" in response.content.decode()
    again = staff_client.post(f"/ui/tasks/{task.id}/run-now", follow=True).content.decode()
    assert "not scheduled" in again


def test_cancel_of_a_scheduled_task_and_of_an_expired_one(staff_client, make_task) -> None:
    task = scheduled(make_task)
    staff_client.post(f"/ui/tasks/{task.id}/cancel")
    assert Task.objects.get(id=task.id).status == "cancelled"
    gone = make_task(status="expired", pool="async", execution_mode="async")
    html = staff_client.post(f"/ui/tasks/{gone.id}/cancel", follow=True).content.decode()
    assert "already finished (expired)" in html and Task.objects.get(id=gone.id).status == "expired"


def test_the_overview_counts_the_new_statuses(staff_client, make_task) -> None:
    scheduled(make_task)
    make_task(status="expired", pool="async", execution_mode="async")
    html = staff_client.get("/ui/overview").content.decode()
    assert 'class="stat status-scheduled"' in html and 'class="stat status-expired"' in html
