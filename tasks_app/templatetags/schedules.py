"""Template filters of the schedule screens: a moment in a schedule's own time zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django import template

register = template.Library()


@register.filter
def in_zone(moment: datetime | None, zone: str) -> str:
    """`2026-03-08 03:00:00 EDT`: what a schedule's slots mean to the people who wrote its cron expression."""
    if moment is None:
        return ""
    try:
        local = moment.astimezone(ZoneInfo(zone))
    except (ZoneInfoNotFoundError, ValueError):
        return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return local.strftime("%Y-%m-%d %H:%M:%S %Z")


@register.filter
def timing(schedule: object) -> str:
    """The schedule's expression as people read it: the cron fields, or `every N s`."""
    interval = getattr(schedule, "interval_s", None)
    if interval is not None:
        return f"every {interval} s"
    return str(getattr(schedule, "cron", ""))
