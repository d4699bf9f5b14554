"""Progress reporting from inside a running task.

    import neutrino

    @app.task(execution_mode="async")
    def build(n: int) -> int:
        for i in range(n):
            ...
            neutrino.progress((i + 1) / n, f"step {i + 1} of {n}")

The worker child installs a reporter before it runs a task; the executor
forwards each report to the ledger, which throttles what it writes. Called
outside a worker (a plain function call in a test), `progress` does nothing.
"""

from __future__ import annotations

from collections.abc import Callable

Reporter = Callable[[float, str], None]

_reporter: Reporter | None = None


def progress(fraction: float, message: str = "") -> None:
    """Record how far the current task is: `fraction` in [0, 1], and a short message."""
    if _reporter is None:
        return
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool):
        raise TypeError(f"progress fraction must be a number, got {fraction!r}")
    _reporter(min(1.0, max(0.0, float(fraction))), str(message)[:200])


def set_reporter(reporter: Reporter | None) -> None:
    """Install the function that receives progress reports (the worker child does this)."""
    global _reporter
    _reporter = reporter
