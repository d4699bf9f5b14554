"""No-op tasks for the benchmarks."""

from neutrino import Neutrino

app = Neutrino("bench")


@app.task
def noop() -> None:
    return None


@app.task(execution_mode="async", timeout_secs=60)
def async_noop() -> None:
    return None
