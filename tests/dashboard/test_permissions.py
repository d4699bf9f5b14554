"""Who may do what in the dashboard: Django model permissions, not staff status, guard every change.

Through Django's test client, as a signed-in browser meets the pages.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission

from pools_app.models import Pool
from tasks_app.models import Task

pytestmark = pytest.mark.django_db


def grant(user: Any, *codenames: str) -> Any:
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return type(user).objects.get(pk=user.pk)  # a fresh object: Django caches a user's permissions


@pytest.fixture
def bare_staff_client(client, bare_staff_user):
    client.force_login(bare_staff_user)
    return client


# --- tasks -------------------------------------------------------------------------------------


def test_a_staff_account_without_permissions_sees_no_buttons_and_gets_403(bare_staff_client, make_task) -> None:
    task = make_task(status="queued", pool="async", execution_mode="async")
    html = bare_staff_client.get(f"/ui/tasks/{task.id}").content.decode()
    assert "cancel-button" not in html and "retry-button" not in html
    for action in ("cancel", "retry"):
        response = bare_staff_client.post(f"/ui/tasks/{task.id}/{action}")
        assert response.status_code == 403
        assert f"tasks_app.{action}_task" in response.content.decode()
    assert Task.objects.count() == 1 and Task.objects.get().status == "queued"


def test_each_button_follows_its_own_permission(client, bare_staff_user, make_task) -> None:
    task = make_task(status="queued", pool="async", execution_mode="async")
    client.force_login(grant(bare_staff_user, "retry_task"))
    html = client.get(f"/ui/tasks/{task.id}").content.decode()
    assert "retry-button" in html and "cancel-button" not in html
    assert client.post(f"/ui/tasks/{task.id}/cancel").status_code == 403
    client.force_login(grant(bare_staff_user, "cancel_task"))
    assert "cancel-button" in client.get(f"/ui/tasks/{task.id}").content.decode()
    assert client.post(f"/ui/tasks/{task.id}/cancel").status_code == 302
    assert Task.objects.get(id=task.id).status == "cancelled"


def test_a_superuser_keeps_every_button(client, django_user_model, make_task) -> None:
    client.force_login(django_user_model.objects.create_superuser("root", password=None))
    task = make_task(status="queued", pool="async", execution_mode="async")
    html = client.get(f"/ui/tasks/{task.id}").content.decode()
    assert "cancel-button" in html and "retry-button" in html
    assert client.post(f"/ui/tasks/{task.id}/cancel").status_code == 302


def test_the_detail_page_shows_who_created_the_task(staff_client, make_task) -> None:
    by_token = make_task(created_by="token:<b>ci</b>")
    html = staff_client.get(f"/ui/tasks/{by_token.id}").content.decode()
    assert 'id="task-created-by">token:&lt;b&gt;ci&lt;/b&gt;<' in html
    older = make_task()
    assert 'id="task-created-by">\u2013<' in staff_client.get(f"/ui/tasks/{older.id}").content.decode()


@pytest.mark.django_db(transaction=True)
def test_a_retry_from_the_dashboard_records_the_user(staff_client, make_task, ledger_flush) -> None:
    failed = make_task(function_name="echo", status="failed", created_by="token:ci")
    response = staff_client.post(f"/ui/tasks/{failed.id}/retry")
    assert response.status_code == 302
    ledger_flush()
    retry = Task.objects.get(id=response["Location"].rsplit("/", 1)[1])
    assert retry.created_by == "user:ada" and retry.created_by_token_id is None
    assert 'id="task-created-by">user:ada<' in staff_client.get(response["Location"]).content.decode()


# --- pools -------------------------------------------------------------------------------------


def test_pool_screens_need_the_pool_permissions(bare_staff_client, default_pools) -> None:
    assert bare_staff_client.get("/ui/pools/new").status_code == 403
    assert bare_staff_client.post("/ui/pools/new", {"name": "x"}).status_code == 403
    assert bare_staff_client.get("/ui/pools/async/edit").status_code == 403
    for action in ("disable", "enable", "drain", "undrain", "delete"):
        assert bare_staff_client.post(f"/ui/pools/async/{action}").status_code == 403, action
    pool = Pool.objects.get(name="async")
    assert pool.enabled and not pool.draining
    pools_page = bare_staff_client.get("/ui/pools").content.decode()
    assert "new-pool-button" not in pools_page and "/ui/pools/async/edit" not in pools_page
    detail = bare_staff_client.get("/ui/pools/async").content.decode()
    assert "edit-pool-button" not in detail and "/ui/pools/async/disable" not in detail
    assert "delete-pool-button" not in detail


def test_change_pool_allows_changes_but_not_deletes(client, bare_staff_user, default_pools) -> None:
    client.force_login(grant(bare_staff_user, "change_pool"))
    detail = client.get("/ui/pools/async").content.decode()
    assert "edit-pool-button" in detail and "delete-pool-button" not in detail
    assert client.post("/ui/pools/async/drain").status_code == 302
    assert Pool.objects.get(name="async").draining
    assert client.post("/ui/pools/async/delete").status_code == 403
    assert client.get("/ui/pools/new").status_code == 403
    assert Pool.objects.filter(name="async").exists()


def test_the_admins_pool_actions_need_change_pool(client, bare_staff_user, default_pools) -> None:
    client.force_login(grant(bare_staff_user, "view_pool"))
    pool = Pool.objects.get(name="async")
    page = client.get("/admin/pools_app/pool/")
    assert page.status_code == 200 and 'value="disable"' not in page.content.decode()
    client.post("/admin/pools_app/pool/", {"action": "disable", "_selected_action": [pool.pk]})
    assert Pool.objects.get(name="async").enabled
