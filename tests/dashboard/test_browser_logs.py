"""The task page's log in headless Chromium: lines a running task writes appear without a reload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dashboard.conftest import XSS_IMG
from tests.dashboard.test_browser import (  # noqa: F401  (fixtures)
    api,
    browser,
    open_live,
    page,
    signed_in_state,
    still_same_document,
)

pytestmark = pytest.mark.browser


def test_the_log_of_a_running_task_tails_live(page: Any, api: httpx.Client,  # noqa: F811  (the fixtures above)
                                              dashboard_worker: Any) -> None:
    response = api.post("/api/log_slowly_async",
                        json={"args": {"first": f"first line {XSS_IMG}", "second": "second line", "pause_s": 4}})
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    open_live(page, f"/ui/tasks/{task_id}")
    lines = page.locator("#log-lines .log-line")
    lines.filter(has_text="first line").wait_for()
    assert lines.filter(has_text="second line").count() == 0  # the task sleeps between the two
    # The second line comes over the websocket into the same document.
    lines.filter(has_text="second line").wait_for()
    assert still_same_document(page)
    texts = lines.all_inner_texts()
    assert [text.split(" stdout ", 1)[-1].strip() for text in texts] == [f"first line {XSS_IMG}", "second line"], texts
    assert page.locator("img").count() == 0  # a task's output is text, never markup
    page.wait_for_selector("#task-live .detail-head .status-completed")
    with page.expect_download() as event:
        page.click("#log-download")
    text = Path(event.value.path()).read_text(encoding="utf-8")
    assert text.splitlines()[1].endswith("INFO stdout second line")
