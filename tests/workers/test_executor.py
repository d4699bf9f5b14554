"""The process-pool executor: real child processes, real signals, no mocks."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from neutrino.app import TaskDefinitionError
from workers.engine.executor import (
    Executor,
    ExecutorClosed,
    ExecutorSettings,
    ResultError,
    RunResult,
    TaskCancelled,
    TaskCrashed,
    TaskRaised,
    TaskTimeout,
    UnknownTask,
)

MODULES = ("tests.fixtures.executor_tasks",)

pytestmark = pytest.mark.timeout(60)

MakeExecutor = Callable[..., Executor]


@pytest.fixture(scope="module")
def pool() -> Iterator[Executor]:
    """A started pool of two children shared by the tests that leave it healthy."""
    executor = Executor(ExecutorSettings(task_modules=MODULES, processes=2, max_tasks_per_child=0))
    executor.start()
    yield executor
    executor.shutdown()


@pytest.fixture
def make_executor() -> Iterator[MakeExecutor]:
    created: list[Executor] = []

    def make(**overrides: Any) -> Executor:
        settings: dict[str, Any] = {"task_modules": MODULES, "processes": 1, **overrides}
        executor = Executor(ExecutorSettings(**settings))
        created.append(executor)
        return executor

    yield make
    for executor in created:
        executor.shutdown()


def run(executor: Executor, function: str, timeout_ms: int = 5_000, **kwargs: Any) -> RunResult:
    return executor.run(
        task_id=kwargs.pop("task_id", None) or str(uuid.uuid4()),
        function=function,
        args=kwargs,
        timeout_ms=timeout_ms,
    )


def pid_of(worker_id: str) -> int:
    return int(worker_id.rsplit(":", 1)[1])


def wait_until_gone(pid: int, within_s: float = 3.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.01)
    return False


def wait_for_size(executor: Executor, size: int, within_s: float = 10.0) -> list[int]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        pids = executor.child_pids()
        if len(pids) == size:
            return pids
        time.sleep(0.01)
    raise AssertionError(f"pool did not get back to {size} children: {executor.child_pids()}")


class Runner(threading.Thread):
    """Runs one task in a thread and keeps what came back: a result or an exception."""

    def __init__(self, executor: Executor, function: str, timeout_ms: int = 20_000, **kwargs: Any) -> None:
        super().__init__(daemon=True)
        self.executor, self.function, self.timeout_ms, self.kwargs = executor, function, timeout_ms, kwargs
        self.task_id = str(uuid.uuid4())
        self.started_event = threading.Event()
        self.result: RunResult | None = None
        self.error: BaseException | None = None
        self.finished_at = 0.0

    def run(self) -> None:
        try:
            self.result = self.executor.run(
                task_id=self.task_id,
                function=self.function,
                args=self.kwargs,
                timeout_ms=self.timeout_ms,
                on_start=lambda _worker_id: self.started_event.set(),
            )
        except BaseException as exc:
            self.error = exc
        finally:
            self.finished_at = time.monotonic()


# ---- results ------------------------------------------------------------------------------------


def test_runs_a_task_and_reports_where(pool: Executor) -> None:
    started: list[str] = []
    result = pool.run(task_id="t-add", function="ex_add", args={"a": 2, "b": 3}, timeout_ms=5_000,
                      on_start=started.append)
    assert result.value == 5
    assert result.result_json == "5"
    assert result.duration_ms >= 0
    assert started == [result.worker_id]
    assert pid_of(result.worker_id) in pool.child_pids()
    assert pool.running() == {}
    assert pool.size == 2


def test_arguments_are_coerced_to_the_declared_types(pool: Executor) -> None:
    assert run(pool, "ex_add", a="2", b=3.0).value == 5


def test_async_task_runs(pool: Executor) -> None:
    assert run(pool, "ex_async_add", a=20, b=22).value == 42


def test_progress_reports_reach_on_progress_in_order(pool: Executor) -> None:
    reports: list[tuple[float, str]] = []
    result = pool.run(task_id="t-progress", function="ex_progress", args={"steps": 3}, timeout_ms=5_000,
                      on_progress=lambda fraction, message: reports.append((fraction, message)))
    assert result.value == 3
    assert [message for _, message in reports] == ["step 1 of 3", "step 2 of 3", "step 3 of 3"]
    assert [fraction for fraction, _ in reports] == pytest.approx([1 / 3, 2 / 3, 1.0])


def test_a_failing_callback_does_not_fail_the_task(pool: Executor) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("callback bug")

    result = pool.run(task_id="t-cb", function="ex_progress", args={"steps": 2}, timeout_ms=5_000,
                      on_start=broken, on_progress=broken)
    assert result.value == 2


# ---- errors the task causes -------------------------------------------------------------------


def test_exception_becomes_task_raised_with_traceback(pool: Executor) -> None:
    with pytest.raises(TaskRaised) as caught:
        run(pool, "ex_fail", task_id="t-fail", message="bad thing")
    error = caught.value
    assert error.task_id == "t-fail"
    assert error.exc_type == "ValueError"
    assert error.error == "bad thing"
    assert "ValueError: bad thing" in error.traceback
    assert "ex_fail" in error.traceback
    assert "workers/child.py" not in error.traceback
    assert "raised ValueError: bad thing" in str(error)
    assert error.worker_id


def test_sys_exit_in_a_task_is_an_error_not_a_crash(pool: Executor) -> None:
    with pytest.raises(TaskRaised) as caught:
        run(pool, "ex_sys_exit")
    assert caught.value.exc_type == "SystemExit"
    assert pid_of(caught.value.worker_id) in pool.child_pids()


def test_bad_arguments_are_a_validation_error(pool: Executor) -> None:
    with pytest.raises(TaskRaised) as caught:
        run(pool, "ex_add", task_id="t-bad", a="not a number", b=1)
    assert caught.value.exc_type == "ValidationError"
    assert caught.value.task_id == "t-bad"
    assert "a" in caught.value.error
    with pytest.raises(TaskRaised, match=r"invalid arguments"):
        run(pool, "ex_add", a=1)  # b missing
    with pytest.raises(TaskRaised):
        run(pool, "ex_add", a=1, b=2, c=3)  # extra argument


def test_unknown_function(pool: Executor) -> None:
    with pytest.raises(UnknownTask, match="no_such_task") as caught:
        run(pool, "no_such_task", task_id="t-unknown")
    assert caught.value.task_id == "t-unknown"


def test_result_that_is_not_json(pool: Executor) -> None:
    with pytest.raises(ResultError, match="not JSON-serialisable") as caught:
        run(pool, "ex_not_json", task_id="t-obj")
    assert caught.value.task_id == "t-obj"
    assert "t-obj" in str(caught.value)
    with pytest.raises(ResultError, match="not JSON-serialisable"):
        run(pool, "ex_nan")


def test_result_over_the_size_limit(make_executor: MakeExecutor) -> None:
    executor = make_executor(max_result_bytes=1_000)
    assert len(run(executor, "ex_big", size=998).value) == 998  # 1,000 bytes with its quotes
    with pytest.raises(ResultError) as caught:
        run(executor, "ex_big", size=2_000)
    assert "2,002 bytes" in str(caught.value)
    assert "1,000 bytes" in str(caught.value)


# ---- deadlines, crashes, cancel -----------------------------------------------------------------


def test_deadline_kills_the_child_and_the_pool_heals(pool: Executor) -> None:
    workers: list[str] = []
    started = time.monotonic()
    with pytest.raises(TaskTimeout) as caught:
        pool.run(task_id="t-slow", function="ex_sleep", args={"seconds": 10}, timeout_ms=300,
                 on_start=workers.append)
    elapsed = time.monotonic() - started
    assert 0.29 <= elapsed < 1.0
    error = caught.value
    assert error.timeout_ms == 300
    assert error.stage == "run"
    assert error.task_id == "t-slow"
    assert error.worker_id == workers[0]
    assert "300 ms" in str(error)
    assert wait_until_gone(pid_of(workers[0])), "the timed-out child is still alive"
    assert pid_of(workers[0]) not in wait_for_size(pool, 2)
    assert run(pool, "ex_add", a=1, b=1).value == 2


def test_os_exit_is_reported_as_a_crash(pool: Executor) -> None:
    with pytest.raises(TaskCrashed) as caught:
        run(pool, "ex_exit", task_id="t-exit", code=3)
    error = caught.value
    assert error.exitcode == 3
    assert "exited with code 3" in str(error)
    assert "t-exit" in str(error)
    assert wait_until_gone(pid_of(error.worker_id))
    assert run(pool, "ex_add", a=1, b=2).value == 3
    wait_for_size(pool, 2)


def test_segfault_is_reported_as_a_crash(pool: Executor) -> None:
    with pytest.raises(TaskCrashed) as caught:
        run(pool, "ex_segfault", task_id="t-segv")
    error = caught.value
    assert error.signal_name == "SIGSEGV"
    assert error.exitcode == -signal.SIGSEGV
    assert "died with SIGSEGV while running task t-segv" in str(error)
    assert run(pool, "ex_add", a=2, b=2).value == 4
    wait_for_size(pool, 2)


def test_cancel_from_another_thread(pool: Executor) -> None:
    runner = Runner(pool, "ex_sleep", seconds=10)
    runner.start()
    assert runner.started_event.wait(5)
    assert runner.task_id in pool.running()
    worker_pid = pid_of(pool.running()[runner.task_id])
    cancelled_at = time.monotonic()
    assert pool.cancel(runner.task_id) is True
    runner.join(5)
    assert isinstance(runner.error, TaskCancelled), runner.error
    assert runner.error.task_id == runner.task_id
    assert runner.finished_at - cancelled_at < 1.0
    assert pool.cancel(runner.task_id) is False
    assert runner.task_id not in pool.running()
    assert wait_until_gone(worker_pid)
    assert run(pool, "ex_add", a=3, b=3).value == 6
    wait_for_size(pool, 2)


def test_cancel_unknown_task_is_false(pool: Executor) -> None:
    assert pool.cancel("never-seen") is False


def test_waiting_for_a_free_child_is_bounded(make_executor: MakeExecutor) -> None:
    executor = make_executor(processes=1)
    busy = Runner(executor, "ex_sleep", seconds=1.5)
    busy.start()
    assert busy.started_event.wait(5)
    started = time.monotonic()
    with pytest.raises(TaskTimeout, match="no free worker process within 200 ms") as caught:
        run(executor, "ex_add", timeout_ms=200, a=1, b=1)
    assert caught.value.stage == "queue"
    assert time.monotonic() - started < 0.8
    busy.join(5)
    assert busy.result is not None  # the busy task was not disturbed


def test_cancel_a_call_still_waiting_for_a_child(make_executor: MakeExecutor) -> None:
    executor = make_executor(processes=1)
    busy = Runner(executor, "ex_sleep", seconds=10)
    busy.start()
    assert busy.started_event.wait(5)
    waiting = Runner(executor, "ex_add", a=1, b=1)
    waiting.start()
    deadline = time.monotonic() + 5
    while not executor.cancel(waiting.task_id):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    waiting.join(5)
    assert isinstance(waiting.error, TaskCancelled), waiting.error
    assert not waiting.started_event.is_set()
    assert executor.cancel(busy.task_id)
    busy.join(5)
    assert isinstance(busy.error, TaskCancelled)


# ---- pool behaviour -------------------------------------------------------------------------------


def test_children_run_tasks_at_the_same_time(make_executor: MakeExecutor) -> None:
    executor = make_executor(processes=2)
    executor.start()
    runners = [Runner(executor, "ex_interval", seconds=0.5) for _ in range(2)]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join(10)
    first, second = (runner.result for runner in runners)
    assert first is not None and second is not None, [runner.error for runner in runners]
    assert first.worker_id != second.worker_id
    a, b = first.value, second.value
    assert a["start"] < b["end"] and b["start"] < a["end"], "the two tasks did not overlap"


def test_child_is_recycled_after_max_tasks(make_executor: MakeExecutor) -> None:
    executor = make_executor(processes=1, max_tasks_per_child=2)
    results = [run(executor, "ex_set_global", value=n) for n in range(5)]
    workers = [result.worker_id for result in results]
    assert workers[0] == workers[1] != workers[2] == workers[3] != workers[4]
    # module state lives as long as its child: a fresh child starts from the import
    assert [result.value for result in results] == [None, 0, None, 2, None]
    assert wait_until_gone(pid_of(workers[0]))


def test_lazy_start_and_child_pids(make_executor: MakeExecutor) -> None:
    executor = make_executor(processes=2)
    assert executor.child_pids() == []
    result = run(executor, "ex_pid")
    assert result.value in executor.child_pids()
    assert len(executor.child_pids()) == 2
    executor.start()  # idempotent
    assert len(executor.child_pids()) == 2


def test_shutdown_stops_children_and_fails_running_calls(make_executor: MakeExecutor) -> None:
    executor = make_executor(processes=2)
    executor.start()
    pids = executor.child_pids()
    runner = Runner(executor, "ex_sleep", seconds=10)
    runner.start()
    assert runner.started_event.wait(5)
    executor.shutdown(wait=True, timeout_s=2)
    runner.join(5)
    assert isinstance(runner.error, ExecutorClosed), runner.error
    for pid in pids:
        assert wait_until_gone(pid, within_s=1)
    with pytest.raises(ExecutorClosed):
        run(executor, "ex_add", a=1, b=1)
    executor.shutdown()  # idempotent


def test_many_threads_share_the_pool(make_executor: MakeExecutor) -> None:
    executor = make_executor(processes=2)
    errors: list[BaseException] = []
    totals: list[int] = []

    def work(offset: int) -> None:
        try:
            for n in range(25):
                totals.append(run(executor, "ex_add", a=offset, b=n).value)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(offset,)) for offset in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sorted(totals) == sorted(offset + n for offset in range(8) for n in range(25))


# ---- task modules -----------------------------------------------------------------------------------


def test_missing_task_module_fails_start(make_executor: MakeExecutor) -> None:
    executor = make_executor(task_modules=("tests.fixtures.no_such_module",))
    with pytest.raises(TaskDefinitionError, match="no_such_module"):
        executor.start()
    assert executor.child_pids() == []


def test_module_raising_on_import_fails_start(
    make_executor: MakeExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"ex_broken_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text('raise RuntimeError("broken at import")\n')
    monkeypatch.chdir(tmp_path)
    executor = make_executor(task_modules=(name,))
    with pytest.raises(TaskDefinitionError, match="RuntimeError: broken at import"):
        executor.start()


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_module_importable_from_the_current_directory(
    make_executor: MakeExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_method: str
) -> None:
    name = f"ex_cwd_{start_method}_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "import os\n"
        "from neutrino import Neutrino\n"
        f"app = Neutrino({name!r})\n"
        "@app.task\n"
        f"def {name}_where() -> str:\n"
        "    return os.getcwd()\n"
    )
    monkeypatch.chdir(tmp_path)
    assert str(tmp_path) not in [os.path.abspath(entry) for entry in __import__("sys").path if entry]
    executor = make_executor(task_modules=(name,), start_method=start_method)
    assert run(executor, f"{name}_where").value == str(tmp_path)


def test_a_child_cannot_make_the_parent_unpickle(make_executor: MakeExecutor, tmp_path: Path) -> None:
    """The child's replies are JSON: a pickle a task writes on the pipe is refused, never loaded."""
    marker = tmp_path / "unpickled"
    executor = make_executor()
    try:
        outcome: object = run(executor, "ex_send_pickle", marker=str(marker))
    except TaskCrashed as exc:
        outcome = exc
    assert not marker.exists()
    assert isinstance(outcome, TaskCrashed) and "not a reply" in str(outcome), outcome
    assert run(executor, "ex_add", a=1, b=2).value == 3  # the pool healed


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="fork"):
        ExecutorSettings(task_modules=MODULES, start_method="fork")
    with pytest.raises(ValueError, match="processes"):
        ExecutorSettings(task_modules=MODULES, processes=0)
    with pytest.raises(ValueError, match="task_modules"):
        ExecutorSettings(task_modules="tests.fixtures.executor_tasks")  # type: ignore[arg-type]


def test_errors_survive_pickling() -> None:
    import pickle

    error = TaskRaised("task t raised ValueError: x", task_id="t", worker_id="h:1", exc_type="ValueError",
                       error="x", traceback="tb")
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.task_id, copy.exc_type, copy.traceback) == (
        TaskRaised, "task t raised ValueError: x", "t", "ValueError", "tb")
