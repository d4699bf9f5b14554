"""Task logs in the executor: real child processes write, the parent reads, also after a kill."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from workers.engine.executor import Executor, ExecutorSettings, TaskTimeout
from workers.engine.logs.format import LogLine, parse

MODULES = ("tests.fixtures.log_tasks",)

pytestmark = pytest.mark.timeout(60)


class Collected:
    """What `on_log` received: the records, how often it was called, the last dropped count."""

    def __init__(self) -> None:
        self.data = b""
        self.calls = 0
        self.dropped = 0
        self.first_call = threading.Event()

    def __call__(self, data: bytes, dropped: int) -> None:
        self.data += data
        self.calls += 1
        self.dropped = dropped
        self.first_call.set()

    @property
    def lines(self) -> list[LogLine]:
        return parse(self.data.decode())

    def texts(self) -> list[str]:
        return [line.text for line in self.lines]


@pytest.fixture(scope="module")
def pool() -> Iterator[Executor]:
    executor = Executor(ExecutorSettings(task_modules=MODULES, processes=1, max_tasks_per_child=0,
                                         log_max_bytes=200_000))
    executor.start()
    yield executor
    executor.shutdown()


def run(pool: Executor, function: str, args: dict[str, Any], timeout_ms: int = 10_000) -> Collected:
    got = Collected()
    pool.run(task_id=str(uuid.uuid4()), function=function, args=args, timeout_ms=timeout_ms, on_log=got)
    return got


def test_every_way_a_task_writes_is_captured_with_its_level_and_stream(pool: Executor) -> None:
    got = run(pool, "log_everything_sync", {"tag": "t1"})
    by_text = {line.text.split("\n")[0]: line for line in got.lines}
    assert (by_text["t1 printed"].stream, by_text["t1 printed"].level) == ("stdout", "INFO")
    assert (by_text["t1 to stderr"].stream, by_text["t1 to stderr"].level) == ("stderr", "ERROR")
    assert (by_text["log_tests: t1 logged at info"].stream, by_text["log_tests: t1 logged at info"].level) == (
        "logging", "INFO")
    traced = by_text["log_tests: t1 logged with a traceback"]
    assert traced.level == "ERROR" and "Traceback" in traced.text and "ValueError: boom" in traced.text
    assert by_text["t1 via neutrino.log step=3"].level == "WARNING"
    assert by_text["t1 via neutrino.log step=3"].stream == "neutrino"
    assert by_text["t1 straight to fd 1"].stream == "raw"
    assert by_text["t1 from a subprocess"].stream == "raw"
    assert by_text["t1 without a newline"].stream == "stdout"  # the last partial line is not lost
    assert all(line.ts > 1_600_000_000 for line in got.lines)
    assert got.dropped == 0


def test_each_attempt_starts_empty(pool: Executor) -> None:
    run(pool, "log_everything_sync", {"tag": "first"})
    got = run(pool, "log_everything_sync", {"tag": "second"})
    assert not [text for text in got.texts() if text.startswith("first")]
    assert "second printed" in got.texts()


def test_a_task_that_writes_nothing_calls_back_never(pool: Executor) -> None:
    got = run(pool, "log_lines", {"count": 0})
    assert got.calls == 0 and got.data == b""


def test_lines_written_before_a_timeout_kill_are_kept(pool: Executor) -> None:
    got = Collected()
    with pytest.raises(TaskTimeout):
        pool.run(task_id=str(uuid.uuid4()), function="log_then_hang_sync", args={"tag": "k"}, timeout_ms=1_500,
                 on_log=got)
    assert got.texts() == ["k line 0", "k line 1", "k line 2"]


def test_the_cap_keeps_the_first_bytes_and_counts_the_rest(pool: Executor) -> None:
    got = run(pool, "log_flood", {"megabytes": 1.0})
    assert 150_000 < len(got.data) <= 200_000
    assert got.dropped >= 1_000_000 - 200_000
    assert "the last line" not in got.texts()


def test_the_log_is_handed_on_while_the_task_runs(pool: Executor) -> None:
    got = Collected()
    done = threading.Thread(target=pool.run, kwargs=dict(
        task_id=str(uuid.uuid4()), function="log_slowly_sync",
        args={"first": "early", "second": "late", "pause_s": 3.0}, timeout_ms=10_000, on_log=got))
    done.start()
    assert got.first_call.wait(2.5), "the first line was not handed on while the task ran"
    assert got.texts() == ["early"]
    done.join(10)
    assert got.texts() == ["early", "late"]


def test_without_capture_the_executor_runs_as_before() -> None:
    executor = Executor(ExecutorSettings(task_modules=MODULES, processes=1, log_max_bytes=0))
    try:
        got = Collected()
        result = executor.run(task_id=str(uuid.uuid4()), function="log_lines", args={"count": 3}, timeout_ms=5_000,
                              on_log=got)
        assert result.value == 3 and got.calls == 0
    finally:
        executor.shutdown()
