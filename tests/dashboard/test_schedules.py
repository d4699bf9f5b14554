"""The schedule screens through Django's test client: list, page, form errors next to their fields, the
preview, the actions and their permissions, and the Django admin with the same validation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from tasks_app.models import Schedule, ScheduleFire
from tasks_app.services.schedules import schedule_create

pytestmark = pytest.mark.django_db

FORM = {"name": "reports", "function_name": "wk_add", "args": '{"a": 1, "b": 2}', "cron": "0 6 * * MON-FRI",
        "interval_s": "", "timezone": "Europe/Paris", "missed": "skip", "catchup_max": "10", "enabled": "on",
        "description": "weekday reports"}


@pytest.fixture
def scheduler_user(django_user_model: Any) -> Any:
    user = django_user_model.objects.create_user("sam", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="tasks_app",
        codename__in=["add_schedule", "change_schedule", "delete_schedule", "run_schedule"]))
    return user


@pytest.fixture
def scheduler_client(client: Any, scheduler_user: Any) -> Any:
    client.force_login(scheduler_user)
    return client


def make(name: str = "reports", **fields: Any) -> Schedule:
    return schedule_create(name=name, fields={"function_name": "wk_add", "args": {"a": 1, "b": 2},
                                              "cron": "0 6 * * *", "timezone": "Asia/Tokyo", **fields},
                           created_by="user:test")


def test_the_list_shows_each_schedule_in_its_zone_with_the_last_fire(scheduler_client, make_task) -> None:
    schedule = make()
    task = make_task(function_name="wk_add", status="failed", pool="async", execution_mode="async")
    ScheduleFire.objects.create(schedule=schedule, slot_at=timezone.now() - timedelta(hours=1),
                                fired_at=timezone.now(), task=task)
    page = scheduler_client.get("/ui/schedules").content.decode()
    assert 'href="/ui/schedules"' in page and 'aria-current="page">Schedules' in page
    assert "reports" in page and "0 6 * * *" in page and "Asia/Tokyo" in page
    assert "JST" in page and "status-failed" in page and f"/ui/tasks/{task.id}" in page
    assert "Run now" in page and "Pause" in page and "New schedule" in page


def test_a_viewer_sees_schedules_but_no_buttons_and_each_action_is_refused(client, viewer_user) -> None:
    make()
    client.force_login(viewer_user)
    page = client.get("/ui/schedules").content.decode()
    assert "reports" in page and "Run now" not in page and "New schedule" not in page
    for action in ("pause", "resume", "run", "delete"):
        assert client.post(f"/ui/schedules/reports/{action}").status_code == 403
    assert client.get("/ui/schedules/new").status_code == 403
    assert client.get("/ui/schedules/reports/edit").status_code == 403
    assert Schedule.objects.get().enabled and not ScheduleFire.objects.exists()


def test_create_through_the_form(scheduler_client) -> None:
    response = scheduler_client.post("/ui/schedules/new", FORM)
    assert response.status_code == 302 and response["Location"] == "/ui/schedules/reports"
    schedule = Schedule.objects.get()
    assert schedule.cron == "0 6 * * MON-FRI" and schedule.args == {"a": 1, "b": 2}
    assert schedule.created_by == "user:sam" and schedule.next_run_at is not None
    page = scheduler_client.get("/ui/schedules/reports").content.decode()
    assert "weekday reports" in page and "Next runs" in page and page.count("CET") + page.count("CEST") >= 5


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"cron": "0 6 * *"}, "cron", "needs 5"),
    ({"cron": "", "interval_s": ""}, "cron", "not both and not neither"),
    ({"timezone": "Paris"}, "timezone", "IANA"),
    ({"args": '{"a": "x", "b": 2}'}, "args", "a:"),
    ({"function_name": "echo"}, "function_name", "Select a valid choice"),  # sync tasks are not offered
    ({"name": "preview"}, "name", "URLs use"),
])
def test_a_bad_form_shows_the_error_next_to_its_field(scheduler_client, change: dict, field: str,
                                                      words: str) -> None:
    response = scheduler_client.post("/ui/schedules/new", {**FORM, **change})
    assert response.status_code == 200
    page = response.content.decode()
    assert f'id="id_{field}_error"' in page, page[:3000]
    assert words in page
    assert not Schedule.objects.exists()


def test_the_form_offers_only_queued_tasks(scheduler_client) -> None:
    page = scheduler_client.get("/ui/schedules/new").content.decode()
    assert 'value="wk_add"' in page and 'value="echo"' not in page
    assert 'id="schedule-preview"' in page and 'hx-get="/ui/schedules/preview"' in page


def test_the_preview_lists_the_next_runs_or_says_what_is_wrong(scheduler_client) -> None:
    ok = scheduler_client.get("/ui/schedules/preview", {"cron": "@daily", "timezone": "America/New_York"},
                              headers={"HX-Request": "true", "HX-Target": "schedule-preview"})
    page = ok.content.decode()
    assert ok.status_code == 200 and page.count("<li>") == 5 and "00:00:00 E" in page
    bad = scheduler_client.get("/ui/schedules/preview", {"cron": "99 * * * *"}).content.decode()
    assert "minute field &#x27;99&#x27;" in bad and "<li>" not in bad
    interval = scheduler_client.get("/ui/schedules/preview", {"interval_s": "90"}).content.decode()
    assert interval.count("<li>") == 5


@pytest.mark.django_db(transaction=True)
def test_pause_resume_run_now_and_delete(scheduler_client, live_settings, default_pools) -> None:
    make()
    assert scheduler_client.post("/ui/schedules/reports/pause").status_code == 302
    assert not Schedule.objects.get().enabled
    assert scheduler_client.post("/ui/schedules/reports/resume").status_code == 302
    assert Schedule.objects.get().enabled
    response = scheduler_client.post("/ui/schedules/reports/run", follow=True)
    fire = ScheduleFire.objects.get()
    assert fire.reason == "manual" and f"ran now as task {fire.task_id}" in response.content.decode()
    assert scheduler_client.post("/ui/schedules/reports/delete").status_code == 302
    assert not Schedule.objects.exists()
    assert scheduler_client.post("/ui/schedules/reports/pause").status_code == 404


def test_edit_keeps_the_name_and_validates(scheduler_client) -> None:
    make()
    page = scheduler_client.get("/ui/schedules/reports/edit").content.decode()
    assert "disabled" in page and "?schedule=reports" in page
    response = scheduler_client.post("/ui/schedules/reports/edit", {**FORM, "name": "renamed", "cron": "",
                                                                     "interval_s": "300"})
    assert response.status_code == 302
    schedule = Schedule.objects.get()
    assert schedule.name == "reports" and schedule.interval_s == 300 and schedule.cron == ""


def test_the_django_admin_lists_and_validates_schedules(admin_client) -> None:
    make()
    assert "reports" in admin_client.get("/admin/tasks_app/schedule/").content.decode()
    bad = admin_client.post("/admin/tasks_app/schedule/add/", {**FORM, "name": "admin-made", "cron": "1 2 3"})
    assert bad.status_code == 200 and "needs 5" in bad.content.decode()
    good = admin_client.post("/admin/tasks_app/schedule/add/", {**FORM, "name": "admin-made",
                                                                 "ScheduleFireInline-TOTAL_FORMS": "0",
                                                                 "ScheduleFireInline-INITIAL_FORMS": "0",
                                                                 "fires-TOTAL_FORMS": "0", "fires-INITIAL_FORMS": "0"})
    assert good.status_code == 302, good.content.decode()[:3000]
    made = Schedule.objects.get(name="admin-made")
    assert made.next_run_at is not None and made.created_by.startswith("user:")
