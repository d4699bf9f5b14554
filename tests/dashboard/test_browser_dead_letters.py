"""The Dead letters page in headless Chromium: queued tasks that failed for good show as one group with its
count, and "Retry all" retries exactly that group as a bulk action (a real `neutrino scheduler` works it,
a real worker ran the failures)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.dashboard import test_browser as browser_tests
from tests.dashboard import test_browser_bulk as bulk_tests

browser, signed_in_state, page, api = (browser_tests.browser, browser_tests.signed_in_state, browser_tests.page,
                                       browser_tests.api)
scheduler, matching = bulk_tests.scheduler, bulk_tests.matching

pytestmark = pytest.mark.browser

FUNCTION = "dash_async_fail"
ERROR_TYPE = "DashDeadLetter"


def test_a_dead_letter_group_is_retried_as_a_whole(page: Any, api: httpx.Client, scheduler: Any,
                                                     dashboard_worker: Any) -> None:
    submitted = api.post(f"/api/{FUNCTION}/batch", json={"items": [{"args": {"n": n}} for n in range(4)]})
    assert submitted.status_code == 202, submitted.text
    ids = {item["task_id"] for item in submitted.json()["items"]}
    deadline = time.monotonic() + 60
    while {t["task_id"] for t in matching(api, function=FUNCTION, status="failed")} < ids:
        assert time.monotonic() < deadline, "the worker did not fail the tasks"
        time.sleep(0.3)
    failed = len(matching(api, function=FUNCTION, status="failed"))

    page.goto("/ui/dead-letters")
    group = page.locator(f'tr.dead-group[data-function="{FUNCTION}"][data-error-type="{ERROR_TYPE}"]')
    assert group.locator(".dead-count").inner_text() == str(failed)
    assert "dead letter" in group.locator(".error-cell").inner_text()
    group.locator(".dead-retry").click()
    page.wait_for_selector("#bulk-confirm-button")
    assert page.inner_text("#bulk-count") == f"{failed:,}", "the confirmation counts exactly the group"
    page.click("#bulk-confirm-button")
    page.wait_for_selector("#bulk-progress[data-status=done]", timeout=60_000)
    assert int(page.inner_text("#bulk-done").replace(",", "")) == failed
    # The retries (made by the operator, so not this API token's to list) fail again on the worker: the
    # group grows by exactly one task per retried one.
    deadline = time.monotonic() + 60
    while True:
        page.goto("/ui/dead-letters")
        if group.locator(".dead-count").inner_text() == str(2 * failed):
            break
        assert time.monotonic() < deadline, f"the group holds {group.locator('.dead-count').inner_text()} tasks"
        time.sleep(0.5)
    one = sorted(ids)[0]
    page.goto(f"/ui/tasks/{one}")
    assert page.locator(".chain-retry").count() == 1, "retried once, as a new task linked to it"
