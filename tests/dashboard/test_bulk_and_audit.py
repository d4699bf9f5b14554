"""Bulk actions in the dashboard and the audit trail, through Django's test client: who may, what the
confirmation shows, what is recorded for each kind of human action, and that no one can change a record.

The bulk flow in Chromium is in test_browser_bulk.py; the scheduler's work in tests/tasks_app/test_bulk*.py.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest
from django.contrib.auth.models import Permission

from pools_app.models import Pool
from tasks_app.models import ApiToken, AuditRecord, BulkAction, Task
from tasks_app.operator_models import AppendOnly

pytestmark = pytest.mark.django_db

BROWSER = {"HTTP_USER_AGENT": "Mozilla/5.0 (test)", "REMOTE_ADDR": "192.0.2.10"}


def grant(user: Any, *codenames: str) -> Any:
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label__in=["tasks_app", "pools_app"],
                                                         codename__in=codenames))
    return type(user).objects.get(pk=user.pk)


def rows(make_task: Any, n: int, **fields: Any) -> list[Task]:
    return [make_task(age_s=60 + i, **fields) for i in range(n)]


def test_select_all_shows_the_exact_count_and_only_the_permitted_actions(staff_client, make_task) -> None:
    rows(make_task, 12, status="queued", function_name="resize", pool="async", execution_mode="async")
    rows(make_task, 3, status="failed", function_name="resize", error="disk full", error_type="OSError")
    rows(make_task, 4, status="queued", function_name="other", pool="async", execution_mode="async")
    listing = staff_client.get("/?function=resize&status=queued").content.decode()
    assert 'id="bulk-select"' in listing
    panel = staff_client.get("/ui/bulk/new?function=resize&status=queued").content.decode()
    assert 'data-count="12"' in panel and ">12</strong>" in panel
    assert 'data-bulk-action="cancel"' in panel and 'data-bulk-action="retry"' in panel
    assert 'data-bulk-action="delete"' not in panel, "delete needs tasks_app.delete_task"
    errors = staff_client.get("/ui/bulk/new?error_type=OSError&error=DISK").content.decode()
    assert 'data-count="3"' in errors
    # The filter is fixed with "created before" the moment of the selection.
    filter_json = json.loads(staff_client.get("/ui/bulk/new?function=resize&status=queued").context["filter_json"])
    assert filter_json["function"] == "resize" and "created_before" in filter_json
    confirm = staff_client.get("/ui/bulk/new", {"filter": json.dumps(filter_json), "action": "cancel"})
    assert confirm.status_code == 200 and 'id="bulk-confirm-button"' in confirm.content.decode()
    assert ">Cancel 12 tasks<" in confirm.content.decode()
    assert staff_client.get("/ui/bulk/new", {"filter": json.dumps(filter_json), "action": "delete"}).status_code == 403


def test_confirming_writes_the_action_and_a_changed_count_is_shown_again(staff_client, make_task) -> None:
    tasks = rows(make_task, 5, status="queued", pool="async", execution_mode="async")
    body = {"filter": json.dumps({"status": "queued"}), "action": "cancel", "expected_count": "5"}
    Task.objects.filter(id=tasks[0].id).update(status="completed")  # one finished since the confirmation
    again = staff_client.post("/ui/bulk", body, HTTP_HX_REQUEST="true", **BROWSER).content.decode()
    assert "now matches 4 tasks" in again and 'data-count="4"' in again
    assert not BulkAction.objects.exists()
    made = staff_client.post("/ui/bulk", {**body, "expected_count": "4"}, HTTP_HX_REQUEST="true", **BROWSER)
    bulk = BulkAction.objects.get()
    assert (bulk.action, bulk.total, bulk.status, bulk.created_by) == ("cancel", 4, "queued", "user:ada")
    html = made.content.decode()
    assert 'id="bulk-progress"' in html and 'hx-trigger="every 1s"' in html and 'id="bulk-stop"' in html
    record = AuditRecord.objects.get(action="bulk.cancel")
    assert (record.actor, record.ip, record.user_agent) == ("user:ada", "192.0.2.10", "Mozilla/5.0 (test)")
    assert record.after["count"] == 4
    stopped = staff_client.post(f"/ui/bulk/{bulk.id}/stop", HTTP_HX_REQUEST="true").content.decode()
    assert 'data-status="stopped"' in stopped and "every 1s" not in stopped
    assert AuditRecord.objects.filter(action="bulk.stop", object_id=str(bulk.id)).exists()
    assert staff_client.get(f"/ui/bulk/{bulk.id}").status_code == 200


def test_bulk_needs_a_permission_for_its_action(client, bare_staff_user, make_task) -> None:
    rows(make_task, 2, status="completed")
    client.force_login(bare_staff_user)
    assert 'id="bulk-select"' not in client.get("/").content.decode()
    assert client.get("/ui/bulk/new").status_code == 403
    body = {"filter": "{}", "action": "delete", "expected_count": "2"}
    assert client.post("/ui/bulk", body).status_code == 403
    client.force_login(grant(bare_staff_user, "delete_task"))
    panel = client.get("/ui/bulk/new").content.decode()
    assert 'data-bulk-action="delete"' in panel and 'data-bulk-action="cancel"' not in panel
    assert client.post("/ui/bulk", body).status_code == 302
    assert BulkAction.objects.get().action == "delete"


def test_cancel_retry_and_pool_changes_in_the_dashboard_are_audited(client, django_user_model, make_task,
                                                                    default_pools) -> None:
    client.force_login(django_user_model.objects.create_superuser("root", password=None))
    task = make_task(status="queued", pool="async", execution_mode="async")
    assert client.post(f"/ui/tasks/{task.id}/cancel", **BROWSER).status_code == 302
    cancel = AuditRecord.objects.get(action="task.cancel")
    assert (cancel.actor, cancel.object_type, cancel.object_id, cancel.ip) == (
        "user:root", "task", str(task.id), "192.0.2.10")
    assert (cancel.before, cancel.after) == ({"status": "queued"}, {"status": "cancelled"})
    assert client.post("/ui/pools/async/drain", **BROWSER).status_code == 302
    drain = AuditRecord.objects.get(action="pool.drain")
    assert (drain.object_id, drain.before, drain.after) == ("async", {"draining": False}, {"draining": True})
    client.post("/ui/pools/async/undrain")
    assert AuditRecord.objects.filter(action="pool.undrain").count() == 1


def test_token_made_and_revoked_from_the_cli_and_the_admin_is_audited(client, django_user_model) -> None:
    from neutrino_site.commands import cmd_token_create, cmd_token_revoke

    assert cmd_token_create(argparse.Namespace(name="ci", admin=True, tasks="")) == 0
    assert cmd_token_revoke(argparse.Namespace(name="ci")) == 0
    made, revoked = AuditRecord.objects.get(action="token.create"), AuditRecord.objects.get(action="token.revoke")
    assert made.actor.startswith("cli:") and made.user_agent == "neutrino CLI"
    assert made.after["name"] == "ci" and made.after["admin"] is True
    assert "secret_hash" not in json.dumps(made.after) and not any("ntr_" in str(v) and len(str(v)) > 20
                                                                    for v in made.after.values())
    assert revoked.before["revoked_at"] is None and revoked.after["revoked_at"]
    client.force_login(django_user_model.objects.create_superuser("root", password=None))
    client.post("/admin/tasks_app/apitoken/add/", {"name": "from-admin", "tasks": ""}, **BROWSER)
    token = ApiToken.objects.get(name="from-admin")
    client.post("/admin/tasks_app/apitoken/", {"action": "revoke", "_selected_action": [token.id]}, **BROWSER)
    assert list(AuditRecord.objects.filter(object_id=str(token.id)).values_list("action", "actor", "ip")) == [
        ("token.revoke", "user:root", "192.0.2.10"), ("token.create", "user:root", "192.0.2.10")]


def test_pool_changes_in_the_admin_are_audited(client, django_user_model, default_pools) -> None:
    client.force_login(django_user_model.objects.create_superuser("root", password=None))
    client.post("/admin/pools_app/pool/", {"action": "disable", "_selected_action": [default_pools["gpu"].pk]})
    assert not Pool.objects.get(name="gpu").enabled
    record = AuditRecord.objects.get(action="pool.disable")
    assert (record.actor, record.object_id) == ("user:root", "gpu")


def test_the_audit_page_filters_pages_and_needs_its_permission(client, bare_staff_user) -> None:
    from tasks_app.services.audit import Actor, audit_record

    for i in range(60):
        audit_record(actor=Actor(label="user:ada" if i % 2 else "token:ci"), action="task.cancel",
                     object_type="task", object_id=f"00000000-0000-0000-0000-{i:012d}")
    audit_record(actor=Actor(label="user:ada"), action="pool.change", object_type="pool", object_id="gpu",
                 before={"max_replicas": 1}, after={"max_replicas": 4})
    client.force_login(bare_staff_user)
    assert client.get("/ui/audit").status_code == 403
    assert "/ui/audit" not in client.get("/").content.decode()
    client.force_login(grant(bare_staff_user, "view_auditrecord"))
    first = client.get("/ui/audit")
    html = first.content.decode()
    assert 'href="/ui/audit"' in html and html.count('data-action="') == 50
    assert html.index('data-action="pool.change"') < html.index('data-action="task.cancel"'), "newest first"
    older = client.get(first.context["older_href"]).content.decode()
    assert older.count('data-action="') == 11
    assert client.get("/ui/audit", {"actor": "token:ci"}).content.decode().count('data-action="') == 30
    assert client.get("/ui/audit", {"object": "pool:gpu"}).content.decode().count('data-action="') == 1
    assert client.get("/ui/audit", {"action": "pool.change", "actor": "token:ci"}).content.decode().count(
        'data-action="') == 0
    assert client.get("/ui/audit", {"before": "2000-01-01T00:00"}).content.decode().count('data-action="') == 0


def test_audit_records_cannot_be_changed_or_deleted_even_by_a_superuser(client, django_user_model) -> None:
    from tasks_app.services.audit import Actor, audit_record

    record = audit_record(actor=Actor(label="user:ada"), action="task.cancel", object_type="task", object_id="x")
    client.force_login(django_user_model.objects.create_superuser("root", password=None))
    assert client.get("/admin/tasks_app/auditrecord/").status_code == 200
    assert client.get(f"/admin/tasks_app/auditrecord/{record.id}/change/").status_code == 200  # a read-only view
    assert client.post(f"/admin/tasks_app/auditrecord/{record.id}/change/",
                       {"actor": "user:mallory"}).status_code == 403
    assert client.get("/admin/tasks_app/auditrecord/add/").status_code == 403
    assert client.post(f"/admin/tasks_app/auditrecord/{record.id}/delete/", {"post": "yes"}).status_code == 403
    client.post("/admin/tasks_app/auditrecord/", {"action": "delete_selected", "_selected_action": [record.id]})
    assert AuditRecord.objects.get(id=record.id).actor == "user:ada"
    assert not Permission.objects.filter(content_type__model="auditrecord",
                                         codename__in=["add_auditrecord", "change_auditrecord",
                                                       "delete_auditrecord"]).exists()
    record.actor = "user:mallory"
    with pytest.raises(AppendOnly):
        record.save()
    with pytest.raises(AppendOnly):
        record.delete()


@pytest.mark.django_db(transaction=True)
def test_a_retry_in_the_dashboard_is_audited_with_the_new_task(staff_client, make_task) -> None:
    failed = make_task(function_name="boom", status="failed", args={"message": "again"})
    response = staff_client.post(f"/ui/tasks/{failed.id}/retry", **BROWSER)
    new_id = response["Location"].rsplit("/", 1)[1]
    record = AuditRecord.objects.get(action="task.retry")
    assert (record.actor, record.object_id, record.ip) == ("user:ada", str(failed.id), "192.0.2.10")
    assert record.after["task_id"] == new_id
