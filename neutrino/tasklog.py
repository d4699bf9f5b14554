"""Writing to the current attempt's log from inside a task.

    import neutrino

    @app.task(execution_mode="async")
    def build(n: int) -> int:
        neutrino.log("starting", n=n)                  # INFO
        neutrino.log("disk almost full", level="warning")

`print`, `sys.stderr` and the `logging` module are captured too (see the README's "Task logs");
`neutrino.log` adds a level and key=value fields without configuring a logger. Called outside a worker (a
plain function call in a test) it goes to the `logging` module, logger `neutrino.task`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

Sink = Callable[[str, str, str], None]  # (level, stream, text)

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_sink: Sink | None = None


def log(message: str, /, level: str = "INFO", **fields: Any) -> None:
    """Write one record to the task's log: `message`, then ` key=value` for each field."""
    name = str(level).upper()
    if name not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    text = str(message) + "".join(f" {key}={value!r}" for key, value in fields.items())
    if _sink is None:
        logging.getLogger("neutrino.task").log(getattr(logging, name), "%s", text)
        return
    _sink(name, "neutrino", text)


def set_sink(sink: Sink | None) -> None:
    """Install the function that receives records (the worker child does this)."""
    global _sink
    _sink = sink
