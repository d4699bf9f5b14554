"""Limits that hold across every worker and gateway: how many tasks of a key run at once, and how many
start per second, minute or hour. Declared on `@app.task` and checked when the decorator runs; the server
enforces them in the database (`tasks_app.services.limits`).

- `concurrency_key` names the argument whose value is a task's key ("customer_id"); without it, the key
  is the function itself. `max_concurrency` is how many tasks of one key (of this function) run at once.
- `rate_limit` ("100/s", "30/m", "1000/h") is how many of the function's tasks start per period; with
  `rate_limit_per_key` each key has its own budget. `on_rate_limit="wait"` (the default) holds a task
  over the rate until it fits; `"reject"` answers the submit 429 with Retry-After instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

RateMode = Literal["wait", "reject"]
RATE_MODES: tuple[RateMode, ...] = get_args(RateMode)
KEY_MAX_CHARS = 200
_PERIODS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
            "h": 3600.0, "hour": 3600.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*$")


class LimitError(ValueError):
    """A limit that cannot work as written."""


@dataclass(frozen=True)
class Rate:
    """`count` task starts per `period_s`."""

    count: int
    period_s: float

    @property
    def interval_s(self) -> float:
        """The time one start uses of the budget."""
        return self.period_s / self.count

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "m", 3600.0: "h"}[self.period_s]
        return f"{self.count}/{unit}"


def rate_of(text: str) -> Rate:
    """Parse "100/s", "30/m", "30/min", "1000/h"; raises LimitError."""
    match = _RATE.match(text.lower()) if isinstance(text, str) else None
    period = _PERIODS.get(match.group(2)) if match else None
    if match is None or period is None or int(match.group(1)) <= 0:
        raise LimitError(f"rate_limit {text!r} is not '<count>/<s|m|h>' with a positive count, e.g. '100/s'")
    return Rate(count=int(match.group(1)), period_s=period)


@dataclass(frozen=True)
class Limits:
    """A task's limits (`TaskSpec.limits`)."""

    concurrency_key: str | None = None
    max_concurrency: int | None = None
    rate: Rate | None = None
    rate_per_key: bool = False
    on_rate_limit: RateMode = "wait"

    @property
    def rate_at_claim(self) -> bool:
        """The worker takes the rate's budget when it starts the task (wait mode); reject mode took it at submit."""
        return self.rate is not None and self.on_rate_limit == "wait"

    @property
    def rate_at_submit(self) -> bool:
        return self.rate is not None and self.on_rate_limit == "reject"

    def key_of(self, args: dict[str, Any]) -> str:
        """The key of a call with `args`: the key argument's value ("" for a function-wide limit)."""
        if self.concurrency_key is None:
            return ""
        value = args.get(self.concurrency_key)
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        return text[:KEY_MAX_CHARS]

    def rate_key(self, args: dict[str, Any]) -> str:
        return self.key_of(args) if self.rate_per_key else ""


def limits_of(*, task: str, parameters: set[str], execution_mode: str, concurrency_key: str | None,
              max_concurrency: int | None, rate_limit: str | None, rate_limit_per_key: bool,
              on_rate_limit: str) -> Limits | None:
    """The limits `@app.task` was given, checked; None when it has none. Raises LimitError."""
    if concurrency_key is None and max_concurrency is None and rate_limit is None:
        if rate_limit_per_key or on_rate_limit != "wait":
            raise LimitError(f"task {task!r}: rate_limit_per_key and on_rate_limit need a rate_limit")
        return None
    if concurrency_key is not None and concurrency_key not in parameters:
        raise LimitError(f"task {task!r}: concurrency_key {concurrency_key!r} is not one of its parameters "
                         f"({', '.join(sorted(parameters)) or 'none'})")
    if max_concurrency is not None and (isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int)
                                        or max_concurrency < 1):
        raise LimitError(f"task {task!r}: max_concurrency must be an integer >= 1, got {max_concurrency!r}")
    if concurrency_key is not None and max_concurrency is None and not rate_limit_per_key:
        raise LimitError(f"task {task!r}: concurrency_key needs max_concurrency (or a rate_limit_per_key)")
    rate = rate_of(rate_limit) if rate_limit is not None else None
    if rate_limit_per_key and concurrency_key is None:
        raise LimitError(f"task {task!r}: rate_limit_per_key needs a concurrency_key naming the key argument")
    if on_rate_limit not in RATE_MODES:
        raise LimitError(f"task {task!r}: on_rate_limit must be one of {', '.join(RATE_MODES)}, "
                         f"got {on_rate_limit!r}")
    if execution_mode == "sync" and (max_concurrency is not None or (rate is not None and on_rate_limit == "wait")):
        raise LimitError(f"task {task!r}: a sync task answers its caller at once and cannot wait for a slot; "
                         "use execution_mode='async', or rate_limit with on_rate_limit='reject'")
    mode: RateMode = "reject" if on_rate_limit == "reject" else "wait"
    return Limits(concurrency_key=concurrency_key, max_concurrency=max_concurrency, rate=rate,
                  rate_per_key=rate_limit_per_key, on_rate_limit=mode)
