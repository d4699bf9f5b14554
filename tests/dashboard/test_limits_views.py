"""A limited task's concurrency key, on its dashboard page and in the polling API."""

from __future__ import annotations

import pytest

from tasks_app.models import ANONYMOUS

pytestmark = pytest.mark.django_db


def test_the_task_page_and_the_api_show_the_concurrency_key(staff_client, client, make_task) -> None:
    limited = make_task(status="running", pool="async", execution_mode="async", concurrency_key="customer-42",
                        created_by=ANONYMOUS)
    plain = make_task(status="completed", created_by=ANONYMOUS)

    html = staff_client.get(f"/ui/tasks/{limited.id}").content.decode()
    assert '<dd class="mono" id="task-concurrency-key">customer-42</dd>' in html
    assert 'id="task-concurrency-key"' not in staff_client.get(f"/ui/tasks/{plain.id}").content.decode()
    assert client.get(f"/tasks/{limited.id}").json()["concurrency_key"] == "customer-42"
    assert client.get(f"/tasks/{plain.id}").json()["concurrency_key"] is None
