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


@app.task(execution_mode="async", timeout_secs=1800)
def async_big_file(megabytes: int) -> object:
    """[objects] A file of `megabytes` MiB written a MiB at a time, returned as a neutrino.File
    (bench/large_results.py)."""
    import os
    import tempfile

    import neutrino

    path = os.path.join(tempfile.mkdtemp(prefix="bench-big-"), "big.bin")
    piece = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for _ in range(megabytes):
            f.write(piece)
    return neutrino.File(path, content_type="application/octet-stream")
