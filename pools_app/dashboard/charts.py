"""A pool's backlog against its replicas over the last hour, as inline SVG drawn on the server.

The autoscaler records a decision a tick (every 2 s under `neutrino dev`, 5 s in a cluster); the chart
groups them into `slots` time slots and draws, per slot, the highest backlog (pending + in flight, left
axis) and the replicas wanted and running (right axis, as steps). A slot without decisions (no
autoscaler ran) leaves a gap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pools_app.models import ScalingDecision
from tasks_app.dashboard.charts import Tick, nice_max

# Four grid lines: an axis maximum of 4 x 10^n splits into round labels.
AXIS_STEPS = (1, 2, 4, 5)


@dataclass(frozen=True)
class Axis:
    y: float
    left: str
    right: str


@dataclass(frozen=True)
class ScalingChart:
    width: int
    height: int
    plot_left: int
    plot_right: int
    plot_top: int
    plot_bottom: int
    backlog: str  # SVG path data
    backlog_area: str
    desired: str
    current: str
    grid: list[Axis]
    ticks: list[Tick]
    backlog_max: int
    replicas_max: int
    points: int

    @property
    def empty(self) -> bool:
        return self.points == 0


def scaling_chart(rows: Sequence[ScalingDecision], *, since: datetime, until: datetime, width: int = 1200,
                  height: int = 220, slots: int = 120) -> ScalingChart:
    left, right, top, bottom = 44, width - 36, 10, height - 24
    span_s = max(1.0, (until - since).total_seconds())
    slot_s = span_s / slots
    grouped: dict[int, list[ScalingDecision]] = {}
    for row in rows:
        index = int((row.at - since).total_seconds() // slot_s)
        if 0 <= index < slots:
            grouped.setdefault(index, []).append(row)
    backlog_max = nice_max(max((r.pending + r.in_flight for r in rows), default=0), steps=AXIS_STEPS, smallest=4)
    replicas_max = nice_max(max((max(r.desired, r.current) for r in rows), default=0), steps=AXIS_STEPS,
                            smallest=4)
    step_w = (right - left) / slots

    def x_at(index: float) -> float:
        return round(left + index * step_w, 2)

    def y_of(value: float, top_value: int) -> float:
        return round(bottom - value / top_value * (bottom - top), 2)

    area: list[str]  # read (`if area`) before its first append, so mypy cannot infer it
    backlog, area, desired, current = [], [], [], []
    previous = -2
    run_start = 0.0
    for index in sorted(grouped):
        group = grouped[index]
        b = max(r.pending + r.in_flight for r in group)
        d = max(r.desired for r in group)
        c = group[-1].current
        x0, x1 = x_at(index), x_at(index + 1)
        gap = index != previous + 1
        if gap:
            if area:
                area.append(f"L{x_at(previous + 1)},{bottom} L{run_start},{bottom} Z")
            run_start = x0
            backlog.append(f"M{x0},{y_of(b, backlog_max)}")
            area.append(f"M{x0},{bottom} L{x0},{y_of(b, backlog_max)}")
            desired.append(f"M{x0},{y_of(d, replicas_max)}")
            current.append(f"M{x0},{y_of(c, replicas_max)}")
        backlog.append(f"L{x1},{y_of(b, backlog_max)}")
        area.append(f"L{x0},{y_of(b, backlog_max)} L{x1},{y_of(b, backlog_max)}")
        desired.append(f"L{x0},{y_of(d, replicas_max)} L{x1},{y_of(d, replicas_max)}")
        current.append(f"L{x0},{y_of(c, replicas_max)} L{x1},{y_of(c, replicas_max)}")
        previous = index
    if area:
        area.append(f"L{x_at(previous + 1)},{bottom} L{run_start},{bottom} Z")
    grid = [Axis(y=y_of(f * backlog_max, backlog_max), left=f"{round(f * backlog_max):,}",
                 right=f"{round(f * replicas_max):,}") for f in (0.0, 0.5, 1.0)]
    ticks = []
    for minutes in range(0, int(span_s // 60) + 1, 15):
        ticks.append(Tick(x=x_at(minutes * 60 / slot_s), label=f"-{int(span_s // 60) - minutes} min"
                          if minutes < span_s // 60 else "now"))
    return ScalingChart(width=width, height=height, plot_left=left, plot_right=right, plot_top=top,
                        plot_bottom=bottom, backlog=" ".join(backlog), backlog_area=" ".join(area),
                        desired=" ".join(desired), current=" ".join(current), grid=grid, ticks=ticks,
                        backlog_max=backlog_max, replicas_max=replicas_max, points=len(rows))
