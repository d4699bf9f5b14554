"""What every dashboard page's base template needs: the vendored front-end files and the current section."""

from __future__ import annotations

import functools
import json
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from tasks_app.dashboard.alerts import alert_banner_context

# Written by scripts/fetch_vendor.py: logical name -> file under static/ (its version in the name).
MANIFEST = settings.BASE_DIR / "static" / "vendor" / "manifest.json"

SECTIONS = {
    "task_list": "tasks",
    "task_detail": "tasks",
    "bulk_detail": "tasks",
    "audit": "audit",
    "overview": "overview",
    "dead_letters": "dead_letters",
    "workers": "workers",
    "pools": "pools",
    "pool_new": "pools",
    "pool_detail": "pools",
    "pool_edit": "pools",
    "schedules": "schedules",
    "schedule_new": "schedules",
    "schedule_detail": "schedules",
    "schedule_edit": "schedules",
    "alerts": "alerts",
    "alert_rule_new": "alerts",
    "alert_rule_edit": "alerts",
    "webhook_target_new": "alerts",
}


@functools.cache
def vendor_files() -> dict[str, str]:
    return dict(json.loads(MANIFEST.read_text()))


def dashboard(request: HttpRequest) -> dict[str, Any]:
    match = getattr(request, "resolver_match", None)
    return {
        "vendor": vendor_files(),
        "section": SECTIONS.get(match.url_name or "", "") if match else "",
    }


def alert_banner(request: HttpRequest) -> dict[str, Any]:
    """The rules firing now, for the banner of every signed-in page (one query on `idx_alert_state`)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return alert_banner_context()
