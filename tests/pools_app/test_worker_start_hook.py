"""`@app.on_worker_start`: a start-up hook runs once in each worker child, before its first task, and what
it loads stays resident for the tasks (a CPU stand-in for a model on a GPU). Real child processes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from neutrino import Neutrino, TaskDefinitionError
from workers.engine.executor import Executor, ExecutorSettings, TaskRaised

pytestmark = pytest.mark.timeout(120)


def executor(pool: str, processes: int = 2, modules: tuple[str, ...] = ("tests.fixtures.pool_tasks",)) -> Executor:
    # spawn, as a gpu pool's worker does: a fresh interpreter that inherits this environment.
    return Executor(ExecutorSettings(task_modules=modules, processes=processes, start_method="spawn", pool=pool,
                                     max_tasks_per_child=0))


def test_the_hook_runs_once_per_child_and_every_task_sees_what_it_loaded(tmp_path, monkeypatch):
    log = tmp_path / "hook.log"
    monkeypatch.setenv("NEUTRINO_TEST_HOOK_LOG", str(log))
    monkeypatch.setenv("NEUTRINO_CHILD_ENV", "NEUTRINO_TEST_HOOK_LOG")  # children see only what is allowed
    pool = executor("gpu", processes=2)
    try:
        pool.start()
        assert len(log.read_text().split()) == 2  # both children ran it before they were ready
        with ThreadPoolExecutor(4) as threads:
            results = list(threads.map(
                lambda i: pool.run(task_id=f"t{i}", function="pl_infer", args={"x": [1.0, float(i)]},
                                   timeout_ms=10_000).value,
                range(12)))
    finally:
        pool.shutdown()
    assert [r["y"] for r in results[:2]] == [[1.0, 3.0], [3.0, 7.0]]
    assert all(r["loaded_by"] == r["pid"] and r["loads"] == 1 for r in results)
    hook_pids = [int(line) for line in log.read_text().split()]
    assert sorted(hook_pids) == sorted(set(hook_pids))  # never twice in one process
    assert {r["pid"] for r in results} <= set(hook_pids)
    assert len(hook_pids) == 2  # 12 tasks, 2 children: 2 loads


def test_children_of_other_pools_do_not_run_it(tmp_path, monkeypatch):
    log = tmp_path / "hook.log"
    monkeypatch.setenv("NEUTRINO_TEST_HOOK_LOG", str(log))
    monkeypatch.setenv("NEUTRINO_CHILD_ENV", "NEUTRINO_TEST_HOOK_LOG")  # children see only what is allowed
    pool = executor("async", processes=1)
    try:
        with pytest.raises(TaskRaised, match="the start-up hook did not run"):
            pool.run(task_id="t1", function="pl_infer", args={"x": [1.0, 1.0]}, timeout_ms=10_000)
    finally:
        pool.shutdown()
    assert not log.exists()


def test_a_failing_hook_stops_the_start_and_says_which_hook(tmp_path):
    pool = executor("gpu", processes=1, modules=("tests.fixtures.bad_hook_tasks",))
    try:
        with pytest.raises(TaskDefinitionError) as raised:
            pool.start()
    finally:
        pool.shutdown()
    message = str(raised.value)
    assert "start-up hook tests.fixtures.bad_hook_tasks.no_gpu_here (pool gpu) raised RuntimeError" in message
    assert "no CUDA device visible" in message and "Traceback" in message


def test_hooks_are_checked_when_registered():
    app = Neutrino("hook-checks")
    with pytest.raises(TaskDefinitionError, match="without arguments"):
        app.on_worker_start(lambda model: None)
    with pytest.raises(TaskDefinitionError, match="not a pool name"):
        app.on_worker_start(pools=["a-100"])
    with pytest.raises(TaskDefinitionError, match="expects a function"):
        app.on_worker_start(pools=["gpu"])(42)  # type: ignore[arg-type]

    @app.on_worker_start(pools="train")
    def load() -> None: ...

    assert load.__name__ == "load"  # the function is returned as it was
    assert app.start_hooks[-1].pools == frozenset({"train"})

