"""A task's stored result on its page in headless Chromium: a returned image shows inline, and the file
downloads with the bytes the task wrote. A real worker stores it in the JetStream object store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dashboard.conftest import DashboardServer
from tests.dashboard.test_browser import (  # noqa: F401  (fixtures)
    api,
    browser,
    page,
    signed_in_state,
)
from tests.dashboard.test_live_server import signed_in
from tests.fixtures.object_tasks import png
from tests.servers import wait_for


def completed_image_task(http: httpx.Client) -> str:
    response = http.post("/api/obj_image", json={"args": {}})
    assert response.status_code == 202, response.text
    task_id = str(response.json()["task_id"])
    wait_for(lambda: http.get(f"/tasks/{task_id}").json()["status"] == "completed", timeout_s=60,
             what="the image task to complete")
    return task_id


def test_the_task_page_links_the_stored_image_and_serves_it_to_a_signed_in_user(
        dashboard_server: DashboardServer, dashboard_worker: Any) -> None:
    with httpx.Client(base_url=dashboard_server.base_url, timeout=30) as api_client:
        task_id = completed_image_task(api_client)
    client = signed_in(dashboard_server)
    html = client.get(f"/ui/tasks/{task_id}").text
    assert f'id="task-result-image" src="/ui/tasks/{task_id}/result?inline=1"' in html
    assert f'href="/ui/tasks/{task_id}/result" download="grey.png"' in html
    assert 'id="task-result"' not in html  # the reference replaces the JSON block
    shown = client.get(f"/ui/tasks/{task_id}/result?inline=1")
    assert shown.status_code == 200 and shown.content == png(8, 4)
    assert shown.headers["content-type"] == "image/png"
    assert shown.headers["content-disposition"] == 'inline; filename="grey.png"'
    saved = client.get(f"/ui/tasks/{task_id}/result")
    assert saved.headers["content-disposition"] == 'attachment; filename="grey.png"' and saved.content == png(8, 4)
    anonymous = httpx.get(f"{dashboard_server.base_url}/ui/tasks/{task_id}/result")
    assert anonymous.status_code == 302  # the dashboard's download needs a login, as its pages do


@pytest.mark.browser
def test_a_returned_image_shows_on_the_task_page_and_downloads(page: Any, api: httpx.Client,  # noqa: F811
                                                                 dashboard_worker: Any) -> None:
    task_id = completed_image_task(api)
    page.goto(f"/ui/tasks/{task_id}")
    image = page.locator("#task-result-image")
    image.wait_for()
    # Decoded by the browser: the picture the task drew (8 x 4 pixels), not a broken image.
    page.wait_for_function("document.querySelector('#task-result-image').complete")
    assert image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [8, 4]
    assert "grey.png" in page.locator("#task-result-object").inner_text()
    assert page.locator("#task-result").count() == 0  # the reference is shown as a link, not as JSON
    with page.expect_download() as event:
        page.click("#task-result-object a")
    assert Path(event.value.path()).read_bytes() == png(8, 4)
