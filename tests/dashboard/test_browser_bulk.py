"""A bulk cancel in headless Chromium, as an operator does it: filter the task list, select all matching,
read the exact count on the confirmation, confirm, watch the progress reach done (a real `neutrino
scheduler` process works it), and find the tasks cancelled. Then the Audit page shows who did it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dashboard import test_browser as browser_tests
from tests.dashboard.conftest import ROOT, DashboardServer, _stop
from tests.dashboard.test_browser import save_screenshot

# The signed-in browser of the dashboard's browser tests (Chromium found as they find it), and their API client.
browser, signed_in_state, page, api = (browser_tests.browser, browser_tests.signed_in_state, browser_tests.page,
                                       browser_tests.api)

pytestmark = pytest.mark.browser

FUNCTION = "dash_async_sleep"


@pytest.fixture(scope="module")
def scheduler(dashboard_server: DashboardServer) -> Iterator[subprocess.Popen[bytes]]:
    log_path = dashboard_server.log_path.with_name("scheduler.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "neutrino_site.cli", "scheduler"], env=dashboard_server.env,
                                   cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        _stop(process)
        print(f"----- scheduler (exit {process.returncode}) -----\n{log_path.read_text(errors='replace')}")


def matching(client: httpx.Client, **params: str) -> list[dict[str, Any]]:
    """Every task the API lists for these filters (all pages)."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        body = client.get("/tasks", params={**params, "limit": "100", **({"cursor": cursor} if cursor else {})}).json()
        items += body["items"]
        if not (cursor := body["next_cursor"]):
            return items


def test_bulk_cancel_from_the_task_list(page: Any, api: httpx.Client, scheduler: Any, tmp_path: Path) -> None:
    queued = api.post(f"/api/{FUNCTION}/batch", json={"items": [{"args": {"seconds": 300}}] * 30})
    assert queued.status_code == 202, queued.text
    mine = {item["task_id"] for item in queued.json()["items"]}
    total = len(matching(api, function=FUNCTION))  # with any other test's tasks of this function

    page.goto("/")
    page.fill("#f-function", FUNCTION)
    page.click("#task-filters button[type=submit]")
    page.wait_for_url(f"**function={FUNCTION}**")
    page.click("#bulk-select")
    page.wait_for_selector("#bulk-confirm")
    assert page.inner_text("#bulk-count") == f"{total:,}"
    page.click("[data-bulk-action=cancel]")
    page.wait_for_selector("#bulk-confirm-button")
    assert page.inner_text("#bulk-count") == f"{total:,}", "the confirmation shows the exact count"
    assert page.inner_text("#bulk-confirm-button") == f"Cancel {total:,} tasks"
    save_screenshot(page, "bulk-confirm.png", tmp_path)
    page.click("#bulk-confirm-button")
    page.wait_for_selector("#bulk-progress")
    page.wait_for_selector("#bulk-progress[data-status=done]", timeout=60_000)
    save_screenshot(page, "bulk-done.png", tmp_path)
    assert page.inner_text("#bulk-percent") == "100%"
    done, not_done = int(page.inner_text("#bulk-done").replace(",", "")), int(
        page.inner_text("#bulk-failed").replace(",", ""))
    assert done + not_done == total and done >= len(mine)

    cancelled = {item["task_id"] for item in matching(api, function=FUNCTION, status="cancelled")}
    assert mine <= cancelled
    assert not matching(api, function=FUNCTION, status="queued") and not matching(api, function=FUNCTION,
                                                                                   status="running")

    page.goto("/ui/audit?action=bulk.cancel")
    row = page.locator("#audit-table tbody tr[data-action='bulk.cancel']").first
    assert "user:admin" in row.inner_text() and "127.0.0.1" in row.inner_text()
