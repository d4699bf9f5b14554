"""The task page's family card (parent, group counts and progress, callback, children paged) and the group
cancel button, on groups made through the real API and queued on a real nats-server (no worker runs them)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tasks_app.models import Task, TaskGroup
from tests.workers.test_nats_worker import ensure_topology

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = Client().post(path, body, content_type="application/json")
    assert response.status_code == 202, response.content
    return dict(response.json())


@pytest.fixture
def family(default_pools, live_nats) -> dict[str, Any]:
    ensure_topology(live_nats.url)
    parent = post("/api/gr_square", {"args": {"x": 1}})["task_id"]
    child = post("/api/gr_square", {"args": {"x": 2}, "parent_id": parent})["task_id"]
    group = post("/api/gr_square/group", {"items": [{"args": {"x": x}} for x in range(60)], "then": "gr_sum",
                                          "parent_id": parent})
    return {"parent": parent, "child": child, "group": group}


def test_the_parent_page_shows_its_group_with_counts_progress_callback_and_its_children_paged(
        staff_client, family) -> None:
    html = staff_client.get(f"/ui/tasks/{family['parent']}").content.decode()
    group_id = family["group"]["group_id"]
    assert 'id="task-family"' in html and f'id="group-{group_id}"' in html
    assert "A group it started: 60 tasks of" in html and "0 of 60 finished" in html
    assert 'aria-valuenow="0"' in html and "gr_sum" in html and "runs once all have finished" in html
    assert "Children" in html and "(61)" in html  # 60 members and the lone child
    assert 'id="family-pager"' in html and "page 1 of 2" in html
    second = staff_client.get(f"/ui/tasks/{family['parent']}?children_page=2").content.decode()
    assert "page 2 of 2" in second
    assert 'id="cancel-group-button"' in html


def test_a_member_page_shows_its_parent_and_its_group(staff_client, family) -> None:
    member = family["group"]["task_ids"][5]
    html = staff_client.get(f"/ui/tasks/{member}").content.decode()
    assert 'id="family-parent"' in html and f"/ui/tasks/{family['parent']}" in html
    assert "Its group: 60 tasks of" in html


def test_cancel_group_button_cancels_the_unfinished_members_and_the_callback(staff_client, family) -> None:
    group_id = family["group"]["group_id"]
    response = staff_client.post(f"/ui/groups/{group_id}/cancel", {"next": f"/ui/tasks/{family['parent']}"},
                                 follow=True)
    assert response.redirect_chain[-1][0] == f"/ui/tasks/{family['parent']}"
    html = response.content.decode()
    assert "60 unfinished task(s) cancelled" in html and "60 of 60 finished" in html
    assert set(Task.objects.filter(group_id=group_id).values_list("status", flat=True)) == {"cancelled"}
    group = TaskGroup.objects.get(id=group_id)
    assert Task.objects.get(id=group.callback_task_id).status == "cancelled"
    assert Task.objects.get(id=family["child"]).status == "queued"  # not a member: left alone
    assert 'id="cancel-group-button"' not in html


def test_viewers_get_no_cancel_group_button_and_their_post_is_refused(viewer_client, family) -> None:
    group_id = family["group"]["group_id"]
    assert 'id="cancel-group-button"' not in viewer_client.get(f"/ui/tasks/{family['parent']}").content.decode()
    assert viewer_client.post(f"/ui/groups/{group_id}/cancel").status_code == 403
    assert not Task.objects.filter(group_id=group_id, status="cancelled").exists()
