"""Formatting for the dashboard's templates. Each returns plain text; the templates escape it."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from django import template
from django.utils import timezone

register = template.Library()


@register.filter
def duration(ms: float | None) -> str:
    """12 ms · 1.40 s · 2 min 03 s · 1 h 02 min"""
    if ms is None:
        return ""
    ms = float(ms)
    if ms < 1:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@register.filter
def percent(fraction: float | None) -> int:
    """A progress fraction as a whole percentage, clamped to 0..100 (safe in a style attribute)."""
    if fraction is None:
        return 0
    try:
        return max(0, min(100, round(float(fraction) * 100)))
    except (TypeError, ValueError):
        return 0


@register.filter
def rate(fraction: float | None) -> str:
    if fraction is None:
        return "\u2013"
    return f"{fraction * 100:.1f} %"


@register.filter
def short_id(value: object) -> str:
    return str(value)[:8]


@register.filter
def when(moment: datetime | None) -> str:
    """Time of day for today (UTC), the date too for older moments."""
    if moment is None:
        return ""
    now = timezone.now()
    if moment.date() == now.date():
        return f"{moment:%H:%M:%S}"
    return f"{moment:%Y-%m-%d %H:%M:%S}"


@register.filter
def ago(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = float(seconds)
    if seconds < 1:
        return "just now"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


@register.filter
def since(later: datetime | None, earlier: datetime | None) -> str:
    """The time from `earlier` to `later`, as `+1.20 s`."""
    if later is None or earlier is None:
        return ""
    return "+" + duration((later - earlier).total_seconds() * 1000)


@register.filter
def stamp(moment: datetime | None) -> str:
    """2025-01-31 14:05:03.123 (UTC, milliseconds)."""
    if moment is None:
        return ""
    return f"{moment:%Y-%m-%d %H:%M:%S}.{moment.microsecond // 1000:03d}"


@register.filter
def as_json(value: object) -> str:
    """A value as compact JSON, for showing arguments inline (escaped by the template like any text)."""
    return json.dumps(value, sort_keys=True, default=str)


@register.filter
def log_time(ts: float) -> str:
    """A log line's time of day, UTC, to the millisecond: `14:03:07.123`."""
    moment = datetime.fromtimestamp(float(ts), tz=UTC)
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


@register.filter
def count(value: int | None) -> str:
    """A count with thousands separators: 12,345."""
    return "" if value is None else f"{int(value):,}"
