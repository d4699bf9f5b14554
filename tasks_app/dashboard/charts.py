"""The overview's chart, drawn on the server as inline SVG: no chart library, no JavaScript.

`minute_chart` turns per-minute counts into bars of stacked status segments; the template only
writes out the rectangles and labels it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from tasks_app.models import TaskStatus
from tasks_app.selectors.dashboard import MinuteBucket

# Bottom to top: the finished states first, then what is still moving.
STACK_ORDER = (
    TaskStatus.COMPLETED,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
    TaskStatus.EXPIRED,
    TaskStatus.RUNNING,
    TaskStatus.QUEUED,
    TaskStatus.PENDING,
    TaskStatus.SCHEDULED,
)


@dataclass(frozen=True)
class Segment:
    status: str
    count: int
    y: float
    height: float


@dataclass(frozen=True)
class Bar:
    start: datetime
    x: float
    width: float
    total: int
    sampled: bool
    segments: list[Segment]

    @property
    def title(self) -> str:
        if not self.sampled:
            return f"{self.start:%H:%M} UTC: not read (too many tasks in the hour; newest rows only)"
        parts = ", ".join(f"{s.count} {s.status}" for s in self.segments) or "no tasks"
        return f"{self.start:%H:%M} UTC: {parts}"


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class GridLine:
    y: float
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    plot_top: int
    plot_bottom: int
    plot_left: int
    bars: list[Bar]
    ticks: list[Tick]
    grid: list[GridLine]
    y_max: int

    @property
    def plot_height(self) -> int:
        return self.plot_bottom - self.plot_top


def nice_max(value: int, *, steps: Sequence[int] = (1, 2, 5), smallest: int = 5) -> int:
    """A round axis maximum at or above `value`: `smallest`, or one of `steps` (or 10) x 10^n."""
    if value <= smallest:
        return smallest
    magnitude = 10 ** (len(str(value)) - 1)
    for step in (*steps, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def minute_chart(buckets: list[MinuteBucket], *, width: int = 1200, height: int = 240) -> Chart:
    plot_left, plot_right, plot_top, plot_bottom = 44, width - 8, 10, height - 24
    plot_width, plot_height = plot_right - plot_left, plot_bottom - plot_top
    y_max = nice_max(max((b.total for b in buckets), default=0))
    slot = plot_width / max(1, len(buckets))
    bars, ticks = [], []
    for index, bucket in enumerate(buckets):
        x = plot_left + index * slot
        segments, y = [], float(plot_bottom)
        for status in STACK_ORDER:
            count = bucket.counts.get(status, 0)
            if not count:
                continue
            segment_height = count / y_max * plot_height
            y -= segment_height
            segments.append(Segment(status=status, count=count, y=round(y, 2), height=round(segment_height, 2)))
        bars.append(Bar(start=bucket.start, x=round(x + slot * 0.1, 2), width=round(slot * 0.8, 2),
                        total=bucket.total, sampled=bucket.sampled, segments=segments))
        if bucket.start.minute % 15 == 0:
            ticks.append(Tick(x=round(x + slot / 2, 2), label=f"{bucket.start:%H:%M}"))
    grid = [
        GridLine(y=round(plot_bottom - fraction * plot_height, 2), label=f"{round(y_max * fraction):,}")
        for fraction in (0.0, 0.5, 1.0)
    ]
    return Chart(width=width, height=height, plot_top=plot_top, plot_bottom=plot_bottom, plot_left=plot_left,
                 bars=bars, ticks=ticks, grid=grid, y_max=y_max)
