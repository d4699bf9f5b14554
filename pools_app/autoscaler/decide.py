"""The autoscaler's decision: how many workers a NATS pool wants. Pure: no I/O, no clock, no Django.

    desired = ceil(backlog / target_backlog_per_replica), within [min_replicas, max_replicas]
    backlog = pending (in the stream, not yet delivered) + in flight (delivered, not yet acknowledged)

- **Up at once**: a figure at or above the current replicas is taken on the tick it is seen.
- **Down after the delay**: a lower figure is taken only once it has held for `scale_down_delay_s`;
  the pool then goes to the highest figure seen during that window (a stabilisation window, as the
  Kubernetes HPA's). Any figure at or above the current replicas inside the window keeps them.
- **To zero** (a pool whose min is 0) only when nothing was pending or in flight for the whole delay;
  since a single waiting message makes the figure at least 1, that is the rule above.
- **From zero on the first message**: backlog 1 makes the figure 1, and up is at once.
- A disabled pool wants 0 at once: its workers drain (SIGTERM) and take nothing new.

The caller keeps the returned `ScalingState` and passes it back on the next tick, with the same
clock (seconds; `time.monotonic()` in the actuators, made-up numbers in the tests). Both actuators
(`workers.dev.supervisor` for `neutrino dev`, `pools_app.autoscaler.kube` for a cluster) call `decide()`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ScalingPolicy:
    """What the decision reads of a pool (a `pools_app.models.Pool` has it all: `policy_of(pool)`)."""

    min_replicas: int
    max_replicas: int
    target_backlog_per_replica: int
    scale_down_delay_s: float
    enabled: bool = True


@dataclass(frozen=True)
class ScalingState:
    """What a pool's decisions remember between ticks.

    `samples`: (at, figure) of the ticks inside the scale-down window, oldest first, plus the last one
    before the window when none falls on its start (it tells the figure there). A fresh autoscaler has
    none, so it watches a whole delay before it removes a worker it found running.
    `idle_since`: since when nothing was pending or in flight (None: something is).
    """

    samples: tuple[tuple[float, int], ...] = ()
    idle_since: float | None = None


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str
    state: ScalingState = field(repr=False)
    wanted: int = 0  # the figure of this tick alone (before the scale-down delay)


def policy_of(pool: object) -> ScalingPolicy:
    """A pool's policy; a draining pool may go to zero once its queue is empty, whatever its min."""
    draining = bool(getattr(pool, "draining", False))
    return ScalingPolicy(
        min_replicas=0 if draining else int(pool.min_replicas),  # type: ignore[attr-defined]
        max_replicas=int(pool.max_replicas),  # type: ignore[attr-defined]
        target_backlog_per_replica=int(pool.target_backlog_per_replica),  # type: ignore[attr-defined]
        scale_down_delay_s=float(pool.scale_down_delay_s),  # type: ignore[attr-defined]
        enabled=bool(pool.enabled),  # type: ignore[attr-defined]
    )


def wanted_replicas(policy: ScalingPolicy, backlog: int) -> int:
    """ceil(backlog / target) within [min, max] (a max below the min counts as the min)."""
    target = max(1, policy.target_backlog_per_replica)
    low = max(0, policy.min_replicas)
    high = max(low, policy.max_replicas)
    return min(high, max(low, math.ceil(max(0, backlog) / target)))


def decide(*, policy: ScalingPolicy, pending: int, in_flight: int, current: int, now: float,
           state: ScalingState | None = None) -> Decision:
    """The replicas a pool should have now, why, and the state to pass back next time."""
    state = state or ScalingState()
    backlog = max(0, pending) + max(0, in_flight)
    idle_since = None if backlog else (state.idle_since if state.idle_since is not None else now)
    figure = wanted_replicas(policy, backlog) if policy.enabled else 0
    delay = max(0.0, policy.scale_down_delay_s)
    samples = _window([*state.samples, (now, figure)], start=now - delay)
    new_state = ScalingState(samples=samples, idle_since=idle_since)
    load = f"backlog {backlog} ({pending} pending + {in_flight} in flight)"

    def answer(desired: int, reason: str) -> Decision:
        return Decision(desired=desired, reason=reason, state=new_state, wanted=figure)

    if not policy.enabled:
        if current == 0:
            return answer(0, "pool is disabled")
        return answer(0, f"pool is disabled: stop its {current} worker(s) (they drain)")
    per = f"{load} / {policy.target_backlog_per_replica} per replica -> {figure}" + _clamped(policy, backlog, figure)
    if figure > current:
        verb = "scale from zero" if current == 0 else "scale up"
        if wanted_replicas(policy, 0) == figure:  # the backlog asks for no more than the min
            return answer(figure, f"{verb}: the pool's min replicas is {figure}")
        return answer(figure, f"{verb}: {per}")
    if figure == current:
        return answer(current, f"steady: {per}")
    # Lower: only once every figure of the last `delay` seconds is below the current replicas.
    window_covered = samples[0][0] <= now - delay
    highest = max(f for _, f in samples)
    if highest < current and window_covered:
        if highest == 0:
            idle_for = now - (idle_since if idle_since is not None else now)
            return answer(0, f"scale to zero: nothing pending or in flight for {idle_for:.0f} s "
                             f"(delay {delay:.0f} s)")
        return answer(highest, f"scale down: at most {highest} wanted for {delay:.0f} s; {load}")
    held = now - _lower_since(samples, current)
    return answer(current, f"hold {current}: {per}, lower for {held:.0f} s of the {delay:.0f} s delay")


def _clamped(policy: ScalingPolicy, backlog: int, figure: int) -> str:
    raw = math.ceil(max(0, backlog) / max(1, policy.target_backlog_per_replica))
    if raw > figure:
        return f" (max {figure})"
    if raw < figure:
        return f" (min {figure})"
    return ""


def _window(samples: list[tuple[float, int]], *, start: float) -> tuple[tuple[float, int], ...]:
    """The samples at or after `start`, and the last one before it when none is exactly at `start`."""
    ordered = sorted(samples)
    inside = [s for s in ordered if s[0] >= start]
    before = [s for s in ordered if s[0] < start]
    if before and (not inside or inside[0][0] > start):
        inside.insert(0, before[-1])
    return tuple(inside)


def _lower_since(samples: tuple[tuple[float, int], ...], current: int) -> float:
    """When the run of figures below `current` that ends with the newest sample began."""
    since = samples[-1][0]
    for at, figure in reversed(samples):
        if figure >= current:
            break
        since = at
    return since
