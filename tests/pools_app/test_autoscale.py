"""The autoscaler's decision function, as a table of scenarios (no I/O: made-up clocks and depths)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pools_app.autoscaler.decide import Decision, ScalingPolicy, ScalingState, decide, wanted_replicas


@dataclass(frozen=True)
class Tick:
    at: float
    pending: int
    in_flight: int = 0


def policy(min_r: int = 0, max_r: int = 4, target: int = 5, delay: float = 10.0, enabled: bool = True) -> ScalingPolicy:
    return ScalingPolicy(min_replicas=min_r, max_replicas=max_r, target_backlog_per_replica=target,
                         scale_down_delay_s=delay, enabled=enabled)


def run(p: ScalingPolicy, start: int, ticks: list[Tick]) -> list[Decision]:
    """Feed the ticks in order; the actuator does what each decision says (current follows desired)."""
    current, state = start, ScalingState()
    decisions = []
    for tick in ticks:
        decision = decide(policy=p, pending=tick.pending, in_flight=tick.in_flight, current=current, now=tick.at,
                          state=state)
        decisions.append(decision)
        current, state = decision.desired, decision.state
    return decisions


# (name, policy, replicas at start, ticks, expected desired after each tick, a word in the last reason)
SCENARIOS = [
    ("idle pool with min 0 stays at zero", policy(), 0,
     [Tick(0, 0), Tick(2, 0), Tick(20, 0)], [0, 0, 0], "steady"),
    ("from zero on the first message", policy(), 0,
     [Tick(0, 0), Tick(2, 1)], [0, 1], "scale from zero"),
    ("a message in flight alone keeps one worker", policy(), 0,
     [Tick(0, 0, in_flight=1)], [1], "scale from zero"),
    ("min replicas hold with nothing to do", policy(min_r=2), 0,
     [Tick(0, 0), Tick(60, 0)], [2, 2], "steady"),
    ("min replicas from zero say so", policy(min_r=1), 0,
     [Tick(0, 0)], [1], "the pool's min replicas is 1"),
    ("up at once, rounded up", policy(), 1,
     [Tick(0, 11)], [3], "scale up"),
    ("never above max", policy(max_r=4), 1,
     [Tick(0, 500)], [4], "(max 4)"),
    ("backlog is pending plus in flight", policy(target=5), 1,
     [Tick(0, 3, in_flight=8)], [3], "scale up"),
    ("down only after the lower figure held for the delay", policy(delay=10), 4,
     [Tick(0, 20), Tick(2, 6), Tick(6, 6), Tick(11, 6), Tick(12, 6)], [4, 4, 4, 4, 2], "scale down"),
    ("a rise inside the window restarts the wait", policy(delay=10), 4,
     [Tick(0, 20), Tick(2, 6), Tick(8, 20), Tick(10, 6), Tick(19, 6), Tick(20, 6)], [4, 4, 4, 4, 4, 2],
     "scale down"),
    ("down to the highest figure of the window", policy(delay=10), 4,
     [Tick(0, 20), Tick(2, 14), Tick(5, 6), Tick(12, 6), Tick(15, 6)], [4, 4, 4, 3, 2], "scale down"),
    ("to zero only after the delay with nothing pending or in flight", policy(delay=10), 2,
     [Tick(0, 0, in_flight=1), Tick(2, 0), Tick(11, 0), Tick(12, 0)], [2, 2, 1, 0], "scale to zero"),
    ("in flight work keeps the last worker", policy(delay=10), 1,
     [Tick(0, 0, in_flight=1), Tick(30, 0, in_flight=1), Tick(60, 0, in_flight=1)], [1, 1, 1], "steady"),
    ("not below min after the delay", policy(min_r=1, delay=5), 3,
     [Tick(0, 0), Tick(5, 0), Tick(10, 0)], [3, 1, 1], "steady"),
    ("a fresh autoscaler watches a whole delay before removing workers", policy(delay=10), 3,
     [Tick(100, 0), Tick(105, 0), Tick(110, 0)], [3, 3, 0], "scale to zero"),
    ("a gap longer than the delay still needs a lower figure at the window's start", policy(delay=10), 4,
     [Tick(0, 20), Tick(25, 0), Tick(35, 0)], [4, 4, 0], "scale to zero"),
    ("zero delay scales down at once", policy(delay=0), 4,
     [Tick(0, 20), Tick(1, 5)], [4, 1], "scale down"),
    ("disabled pool goes to zero at once", policy(enabled=False), 3,
     [Tick(0, 50)], [0], "disabled"),
    ("max below min counts as min", policy(min_r=2, max_r=1), 0,
     [Tick(0, 100)], [2], "scale from zero"),
]


@pytest.mark.parametrize(("name", "p", "start", "ticks", "expected", "word"), SCENARIOS,
                         ids=[s[0] for s in SCENARIOS])
def test_decision_table(name, p, start, ticks, expected, word):
    decisions = run(p, start, ticks)
    assert [d.desired for d in decisions] == expected
    assert word in decisions[-1].reason, decisions[-1].reason


def test_the_reason_says_what_it_saw_and_how_long_it_waited():
    decisions = run(policy(delay=10), 2, [Tick(0, 0), Tick(4, 0)])
    assert decisions[-1].desired == 2
    assert decisions[-1].reason == (
        "hold 2: backlog 0 (0 pending + 0 in flight) / 5 per replica -> 0, lower for 4 s of the 10 s delay")
    up = run(policy(), 1, [Tick(0, 7, in_flight=4)])[0]
    assert up.reason == "scale up: backlog 11 (7 pending + 4 in flight) / 5 per replica -> 3"


def test_the_state_keeps_only_the_window():
    state = ScalingState()
    for at in range(0, 100, 2):
        state = decide(policy=policy(delay=10), pending=0, in_flight=0, current=0, now=float(at), state=state).state
    assert len(state.samples) <= 7  # 10 s of 2 s ticks, and one before the window at most
    assert state.idle_since == 0.0


@pytest.mark.parametrize(("backlog", "expected"), [(0, 0), (1, 1), (5, 1), (6, 2), (20, 4), (21, 4)])
def test_wanted_replicas_is_ceil_within_bounds(backlog, expected):
    assert wanted_replicas(policy(min_r=0, max_r=4, target=5), backlog) == expected
