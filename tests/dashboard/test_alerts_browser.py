"""The Alerts page in headless Chromium: a person makes a rule in the form, a failing task trips it, a real
`neutrino scheduler` process evaluates it, and the banner appears on the open page without a reload.

Uses the browser fixtures of tests/dashboard/test_browser.py (same Chromium rules: skipped without one
on a laptop, failed under CI=true).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dashboard.conftest import ROOT, DashboardServer, _stop
from tests.dashboard.test_browser import api, browser, page, save_screenshot, signed_in_state  # noqa: F401

pytestmark = pytest.mark.browser

BANNER_WAIT_MS = 45_000  # the scheduler's first rounds, then the banner's own htmx refresh (every 10 s)


@pytest.fixture
def start_scheduler(dashboard_server: DashboardServer, tmp_path: Path) -> Iterator[Callable[[], None]]:
    """Start `neutrino scheduler` on the dashboard server's database and NATS, evaluating every 0.5 s."""
    started: list[subprocess.Popen[bytes]] = []
    log_path = tmp_path / "scheduler.log"

    def start() -> None:
        env = {**dashboard_server.env, "NEUTRINO_ALERTS_EVERY_S": "0.5", "NEUTRINO_WEBHOOKS_EVERY_S": "0.5"}
        with open(log_path, "wb") as log:
            started.append(subprocess.Popen(
                [sys.executable, "-m", "neutrino_site.cli", "scheduler", "--nats-url", env["NEUTRINO_NATS_URL"]],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))

    yield start
    for process in started:
        _stop(process)
    if log_path.exists():
        print(f"----- scheduler -----\n{log_path.read_text(errors='replace')}")


def test_a_rule_made_in_the_form_fires_and_the_banner_shows(page: Any, api: httpx.Client,  # noqa: F811
                                                            start_scheduler: Callable[[], None],
                                                            tmp_path: Path) -> None:
    page.goto("/ui/alerts")
    assert page.locator("#alert-banner .alert-banner").count() == 0
    page.click("#new-rule-button")
    page.wait_for_url("**/ui/alerts/rules/new")
    page.fill("#id_name", "boom is failing")
    page.select_option("#id_kind", "failure_rate")
    page.fill("#id_function_name", "boom")
    page.fill("#id_threshold", "0")
    page.fill("#id_window_s", "600")
    page.fill("#id_min_finished", "1")
    page.click("form.pool-form button[type=submit]")
    page.wait_for_url("**/ui/alerts")
    assert "saved" in page.inner_text(".messages")
    row = page.locator("#alert-rules tr", has_text="boom is failing")
    assert "failure rate of boom > 0% over 600 s" in row.inner_text() and row.get_attribute("data-state") == "ok"

    failed = api.post("/api/boom", json={"args": {"message": "trip the alert"}})
    assert failed.status_code == 500, failed.text
    page.evaluate("window.__sameDocument = true")
    start_scheduler()
    # The open page learns of it by itself: the banner's refresh and the live part's.
    banner = page.locator("#alert-banner .alert-banner")
    banner.wait_for(timeout=BANNER_WAIT_MS)
    assert "boom is failing" in banner.inner_text() and "firing" in banner.inner_text()
    page.wait_for_selector("#alert-rules tr[data-state=firing]", timeout=BANNER_WAIT_MS)
    assert page.evaluate("window.__sameDocument === true"), "no reload"
    save_screenshot(page, "alerts.png", tmp_path)
    # Every page shows it while the rule fires.
    page.goto("/ui/pools")
    assert "boom is failing" in page.inner_text("#alert-banner")

    # Leave the shared server as it was: the rule deleted, no banner.
    page.goto("/ui/alerts")
    page.locator("#alert-rules tr", has_text="boom is failing").locator("button", has_text="Delete").click()
    page.wait_for_url("**/ui/alerts")
    assert page.locator("#alert-banner .alert-banner").count() == 0
