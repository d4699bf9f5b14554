"""The overview says how long history is kept (NEUTRINO_RETENTION_DAYS) and how far back it reaches."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

pytestmark = pytest.mark.django_db


def retention_line(html: str) -> str:
    match = re.search(r'<p class="muted small" id="retention">(.*?)</p>', html, re.S)
    assert match, html
    return " ".join(re.sub(r"<[^>]+>", "", match.group(1)).split())


def test_the_overview_states_the_policy_and_the_oldest_finished_task(staff_client, make_task, settings) -> None:
    settings.NEUTRINO_RETENTION_DAYS = 30
    settings.NEUTRINO_RETENTION_DAYS_BY_STATUS = {"failed": 90}
    oldest = make_task(status="failed", age_s=40 * 86400)
    make_task(status="completed", age_s=3 * 86400)
    make_task(status="running", age_s=400 * 86400)  # active: not history, not counted as the oldest

    line = retention_line(staff_client.get("/ui/overview").content.decode())

    assert line == (f"History kept 30 days (failed: 90 days), then deleted; oldest finished task: "
                    f"{oldest.created_at:%Y-%m-%d %H:%M} UTC (1 month, 1 week ago).")  # the dashboard shows UTC


def test_the_overview_says_when_history_is_kept_forever(staff_client, make_task, settings) -> None:
    settings.NEUTRINO_RETENTION_DAYS = 0
    settings.NEUTRINO_RETENTION_DAYS_BY_STATUS = {}
    line = retention_line(staff_client.get("/ui/overview").content.decode())
    assert line == "History kept forever; no finished task yet."
    make_task(status="completed", age_s=timedelta(hours=2).total_seconds())
    line = retention_line(staff_client.get("/ui/overview", headers={"HX-Request": "true", "HX-Target": "overview"})
                          .content.decode())
    assert line.startswith("History kept forever; oldest finished task: ") and line.endswith("(2 hours ago).")
