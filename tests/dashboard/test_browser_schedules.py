"""The schedule screens in headless Chromium, against a real server, NATS and worker: create a schedule
while its preview follows the typing, pause it, run it now and see its task complete in the history.

The browser, the signed-in state and the page come from tests/dashboard/test_browser.py.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard.test_browser import browser, page, save_screenshot, signed_in_state  # noqa: F401

pytestmark = pytest.mark.browser


def test_create_with_the_preview_then_pause_and_run_now(page: Any, dashboard_worker: Any,  # noqa: F811
                                                        tmp_path: Path) -> None:
    page.goto("/ui/schedules")
    page.click("#new-schedule-button")
    page.wait_for_url("**/ui/schedules/new")
    page.fill("#id_name", "browser-reports")
    page.select_option("#id_function_name", "dash_async_sleep")
    page.fill("#id_args", '{"seconds": 0}')
    page.fill("#id_timezone", "Asia/Kolkata")
    # The preview follows the typing, a short delay after the last key.
    page.type("#id_cron", "*/10 * *", delay=20)
    page.wait_for_selector("#preview-error")
    assert "needs 5" in page.inner_text("#preview-error")
    page.type("#id_cron", " * *", delay=20)
    page.wait_for_function("document.querySelectorAll('#preview-runs li').length === 5")
    runs = page.locator("#preview-runs li .mono").all_inner_texts()
    assert all(run.endswith("IST") and re.search(r":[0-5]0:00 IST$", run) for run in runs), runs
    save_screenshot(page, "schedule-form.png", tmp_path)
    page.click("#save-schedule-button")
    page.wait_for_url("**/ui/schedules/browser-reports")
    assert "created" in page.inner_text(".messages")
    assert page.inner_text("#schedule-timing") == "*/10 * * * *"
    assert page.locator("#next-runs li").count() == 5

    page.click("#pause-button")
    page.wait_for_selector("#resume-button")
    assert page.inner_text("#schedule-state") == "paused" and "paused" in page.inner_text("#schedule-next")

    page.click("#run-now-button")
    page.wait_for_selector(".messages >> text=ran now as task")
    task_id = re.search(r"task ([0-9a-f-]{36})", page.inner_text(".messages")).group(1)  # type: ignore[union-attr]
    assert page.locator(f'#fire-table a[href="/ui/tasks/{task_id}"]').count() == 1
    deadline = time.monotonic() + 30
    while page.locator("#fire-table .status-completed").count() == 0:
        assert time.monotonic() < deadline, page.inner_text("#fire-table")
        time.sleep(0.3)
        page.reload()
    assert "manual" in page.inner_text("#fire-table")
    page.goto("/ui/schedules")
    row = page.locator("#schedule-browser-reports")
    assert "paused" in row.inner_text() and row.locator(".status-completed").count() == 1
    save_screenshot(page, "schedules.png", tmp_path)
