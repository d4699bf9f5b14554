"""The child's side of large results: with a spool directory, bytes, a neutrino.File and JSON over the
inline threshold leave the child as a file and the pipe carries only a marker; without one (the sync
pool) nothing changes. Real child processes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.object_tasks import payload, png
from workers.engine.executor import Executor, ExecutorSettings, ResultError
from workers.engine.spool import spooled

MODULES = ("tests.fixtures.object_tasks",)


@pytest.fixture(scope="module")
def spool_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spool")


@pytest.fixture(scope="module")
def spooling(spool_dir: Path) -> Iterator[Executor]:
    executor = Executor(ExecutorSettings(task_modules=MODULES, processes=1, spool_dir=str(spool_dir),
                                         inline_result_bytes=1000, max_object_bytes=2_000_000))
    yield executor
    executor.shutdown()


@pytest.fixture(scope="module")
def plain() -> Iterator[Executor]:
    executor = Executor(ExecutorSettings(task_modules=MODULES, processes=1))
    yield executor
    executor.shutdown()


def test_bytes_come_back_as_a_spool_file(spooling: Executor, spool_dir: Path) -> None:
    result = spooling.run(task_id="t-bytes", function="obj_bytes", args={"megabytes": 0.5, "seed": 3},
                          timeout_ms=30_000)
    marker = spooled(result.value)
    assert marker is not None and marker["spooled"] is True
    assert len(result.result_json) < 500  # the pipe carried the marker, not half a megabyte
    assert Path(marker["path"]).parent == spool_dir
    assert Path(marker["path"]).read_bytes() == payload(0.5, 3)
    assert (marker["size"], marker["content_type"]) == (500_000, "application/octet-stream")


def test_json_over_the_threshold_is_spooled_and_under_it_is_not(spooling: Executor) -> None:
    big = spooling.run(task_id="t-big", function="obj_big_json", args={"characters": 5000}, timeout_ms=30_000)
    marker = spooled(big.value)
    assert marker is not None and marker["content_type"] == "application/json"
    assert json.loads(Path(marker["path"]).read_text()) == {"text": "x" * 5000}
    small = spooling.run(task_id="t-small", function="obj_small", args={}, timeout_ms=30_000)
    assert small.value == {"answer": 42} and spooled(small.value) is None


def test_a_file_is_passed_by_its_path_and_kept(spooling: Executor) -> None:
    result = spooling.run(task_id="t-file", function="obj_image", args={}, timeout_ms=30_000)
    marker = spooled(result.value)
    assert marker is not None and marker["spooled"] is False  # the task's own file: never deleted by the worker
    assert Path(marker["path"]).read_bytes() == png(8, 4)
    assert (marker["content_type"], marker["filename"]) == ("image/png", "grey.png")


def test_over_the_object_limit_fails_and_leaves_no_file(spooling: Executor, spool_dir: Path) -> None:
    before = set(spool_dir.iterdir())
    with pytest.raises(ResultError, match="over the object limit"):
        spooling.run(task_id="t-huge", function="obj_bytes", args={"megabytes": 2.5, "seed": 1}, timeout_ms=30_000)
    assert set(spool_dir.iterdir()) == before


def test_without_a_spool_directory_bytes_are_refused_as_before(plain: Executor) -> None:
    with pytest.raises(ResultError, match="not JSON-serialisable"):
        plain.run(task_id="p-bytes", function="obj_bytes", args={"megabytes": 0.01, "seed": 1}, timeout_ms=30_000)
    assert plain.run(task_id="p-big", function="obj_big_json", args={"characters": 5000},
                     timeout_ms=30_000).value == {"text": "x" * 5000}
