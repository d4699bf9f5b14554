"""No-op tasks for the benchmarks."""

from neutrino import Neutrino

app = Neutrino("bench")


@app.task
def noop() -> None:
    return None


@app.task(execution_mode="async", timeout_secs=60)
def async_noop() -> None:
    return None


@app.task(timeout_ms=30_000)
def print_lines(count: int) -> int:
    """Prints `count` lines of 60 characters (bench/task_logs.py)."""
    line = "x" * 60
    for i in range(count):
        print(i, line)
    return count


@app.task(execution_mode="async", timeout_secs=60, concurrency_key="customer", max_concurrency=4)
def async_limited_noop(customer: str) -> None:
    """async_noop with a concurrency limit per customer (bench/limits.py --end-to-end)."""
    return None


@app.task(execution_mode="async", timeout_secs=60, concurrency_key="customer", max_concurrency=2)
def async_tight_noop(customer: str) -> None:
    """async_noop whose one customer may run 2 at once on a worker of 4 (bench/limits.py --end-to-end)."""
    return None


@app.task(execution_mode="async", timeout_secs=60)
def async_square(x: int) -> int:
    return x * x


@app.task(execution_mode="async", timeout_secs=60)
def async_total(results: list[int | None]) -> int:
    """A group's callback (bench/groups.py): the sum of its members' results."""
    return sum(r for r in results if r is not None)
