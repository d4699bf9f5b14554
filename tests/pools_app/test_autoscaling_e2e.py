"""The local autoscaler end to end: `neutrino dev`'s actuator (`LocalScaler`) stepping in a thread of this
test, real worker processes it starts and stops, a real nats-server, tasks submitted through the API.

Every wait is bounded and polls; no test asserts on wall time.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import nats
import pytest
from django.db import connection

from pools_app.autoscaler.local import LocalScaler, ScalerSettings
from pools_app.models import Pool, ScalingDecision, Worker
from pools_app.selectors import forget_cached_pools
from tasks_app.models import Task
from tests.conftest import _worker_database_env
from tests.servers import wait_for
from workers.engine.broker.bridge import NatsBridge
from workers.engine.topology import STREAM, ConsumerSettings, pool_depth

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
STEP_S = 0.5




def nats_run(url: str, fn: Callable[[Any], Any]) -> Any:
    async def main() -> Any:
        nc = await nats.connect(url)
        try:
            return await fn(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(main())


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as proc:
            return proc.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class RunningScaler:
    """The actuator stepping every STEP_S in a thread, as `neutrino dev` does every 2 s."""

    def __init__(self, scaler: LocalScaler, said: list[str]) -> None:
        self.scaler = scaler
        self.said = said
        self.seen: dict[str, int] = {}  # the most workers each pool had at once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-autoscaler", daemon=True)
        self.errors: list[BaseException] = []

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self.scaler.step()
                except Exception as exc:  # surfaced by the test
                    self.errors.append(exc)
                for pool, group in list(self.scaler.running.items()):
                    self.seen[pool] = max(self.seen.get(pool, 0), len(group))
                self._stop.wait(STEP_S)
        finally:
            connection.close()

    def start(self) -> RunningScaler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.scaler.stop_all(20)

    def replicas(self, pool: str) -> int:
        return self.scaler.replicas(pool)


@pytest.fixture
def autoscaler(live_nats, default_pools, tmp_path) -> Iterator[Callable[..., RunningScaler]]:
    """Factory: autoscaler(env={...}) -> a RunningScaler over fresh stream contents."""

    async def purge(js: Any) -> None:
        try:
            await js.purge_stream(STREAM)  # leftovers of other tests would count as backlog
        except nats.js.errors.NotFoundError:
            pass

    nats_run(live_nats.url, purge)
    bridge = NatsBridge(live_nats.url, name="test-autoscaler").start()
    started: list[RunningScaler] = []

    def start(env: dict[str, str] | None = None) -> RunningScaler:
        full_env = {
            **os.environ, **_worker_database_env(),
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
            "NEUTRINO_NATS_URL": live_nats.url, "NEUTRINO_ACK_WAIT_S": "5", "NEUTRINO_HEARTBEAT_S": "1",
            "NEUTRINO_WORKER_GRACE_S": "10", "NEUTRINO_SWEEP_AFTER_S": "2", "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        said: list[str] = []
        settings = ScalerSettings(
            worker_argv=lambda pool: [sys.executable, "-m", "neutrino_site.cli", "serve", "--mode", "nats",
                                      "--pool", pool],
            env=full_env, grace_s=10.0, consumer=ConsumerSettings(ack_wait_s=5.0, max_deliver=10),
            say=said.append,
        )
        running = RunningScaler(LocalScaler(settings, bridge), said).start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()
        print("\n".join(running.said))
        assert not running.errors, running.errors
    bridge.close(timeout_s=2.0)


def set_pool(name: str, **fields: Any) -> None:
    Pool.objects.filter(name=name).update(**fields)
    forget_cached_pools()


def submit(client: Any, task: str, **args: Any) -> str:
    response = client.post(f"/api/{task}", {"args": args}, content_type="application/json")
    assert response.status_code == 202, response.content
    return str(response.json()["task_id"])


def all_completed(ids: list[str]) -> bool:
    return Task.objects.filter(id__in=ids, status="completed").count() == len(ids)


def depth(url: str, pool: str) -> int:
    async def read(js: Any) -> int:
        d = await pool_depth(js, pool)
        return d.pending + d.in_flight

    return int(nats_run(url, read))


def fake_nvidia_smi(directory: Path) -> str:
    """A stand-in `nvidia-smi` that reports one GPU (there is none here); returns a PATH that finds it."""
    directory.mkdir()
    script = directory / "nvidia-smi"
    script.write_text("#!/bin/sh\necho 'Stand-in GPU, 1024 MiB'\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return f"{directory}{os.pathsep}{os.environ.get('PATH', '')}"


def test_gpu_pool_scales_from_zero_runs_the_tasks_and_goes_back_to_zero(client, live_nats, autoscaler, tmp_path):
    set_pool("async", min_replicas=0)
    set_pool("gpu", min_replicas=0, max_replicas=2, target_backlog_per_replica=5, scale_down_delay_s=2)
    hook_log = tmp_path / "hook.log"
    scaler = autoscaler(env={"PATH": fake_nvidia_smi(tmp_path / "bin"), "NEUTRINO_TEST_HOOK_LOG": str(hook_log),
                                "NEUTRINO_CHILD_ENV": "NEUTRINO_TEST_HOOK_LOG"})

    # Idle: decisions are recorded, and no gpu worker runs.
    wait_for(lambda: ScalingDecision.objects.filter(pool="gpu").count() >= 3, what="three gpu decisions")
    assert scaler.replicas("gpu") == 0 and not Worker.objects.filter(pool="gpu").exists()
    assert ScalingDecision.objects.filter(pool="gpu").latest("at").desired == 0

    ids = [submit(client, "pl_infer", x=[1.0, float(i)]) for i in range(3)]
    wait_for(lambda: scaler.replicas("gpu") == 1, what="a gpu worker to start")
    wait_for(lambda: all_completed(ids), what="the gpu tasks to complete")
    rows = list(Task.objects.filter(id__in=ids))
    worker = Worker.objects.get(pool="gpu")
    assert {row.worker_id for row in rows} == {worker.worker_id}
    assert all(row.result["loads"] == 1 and row.result["loaded_by"] == row.result["pid"] for row in rows)
    assert sorted(row.result["y"] for row in rows) == [[1.0, 3.0], [3.0, 7.0], [5.0, 11.0]]
    assert worker.gpus == [{"name": "Stand-in GPU", "memory": "1024 MiB"}]  # the heartbeat's GPU line
    assert len(hook_log.read_text().split()) == 1  # concurrency 1: one child, one load for three tasks

    # After the delay with nothing pending or in flight, the worker is told to stop, and stops cleanly.
    wait_for(lambda: scaler.replicas("gpu") == 0, what="the gpu pool to go back to zero")
    wait_for(lambda: not pid_alive(worker.pid), what="the gpu worker to exit")
    wait_for(lambda: Worker.objects.get(pk=worker.pk).stopped_at is not None, what="its last heartbeat")
    reasons = list(ScalingDecision.objects.filter(pool="gpu").order_by("at").values_list("reason", flat=True))
    assert any(r.startswith("scale from zero") for r in reasons)
    assert any(r.startswith("scale to zero") for r in reasons)
    assert Task.objects.filter(id__in=ids).exclude(status="completed").count() == 0  # nothing lost
    assert depth(live_nats.url, "gpu") == 0
    assert scaler.seen["gpu"] == 1


def test_async_pool_scales_up_under_a_burst_drains_and_scales_back(client, live_nats, autoscaler):
    set_pool("gpu", min_replicas=0)
    set_pool("async", min_replicas=1, max_replicas=4, target_backlog_per_replica=2, scale_down_delay_s=2,
             concurrency=1)
    scaler = autoscaler()
    wait_for(lambda: Worker.objects.filter(pool="async", stopped_at__isnull=True).exists(),
             what="the first async worker's heartbeat")

    ids = [submit(client, "pl_slow", seconds=1.0, tag=i) for i in range(12)]
    wait_for(lambda: scaler.replicas("async") == 4, what="four async workers")
    wait_for(lambda: all_completed(ids), timeout_s=60, what="the burst to complete")
    wait_for(lambda: scaler.replicas("async") == 1, what="the pool to scale back to its min")

    rows = list(Task.objects.filter(id__in=ids))
    assert sorted(row.result for row in rows) == list(range(12))  # every task, once
    assert len({row.worker_id for row in rows}) >= 2  # the burst was shared
    assert scaler.seen["async"] == 4 and "gpu" not in scaler.seen  # never above max; gpu never started
    assert ScalingDecision.objects.filter(pool="async").order_by("-desired").first().desired == 4
    stopped = wait_for(lambda: (w := list(Worker.objects.filter(pool="async", stopped_at__isnull=False)))
                       and len(w) >= 3 and w, what="three stopped workers")
    wait_for(lambda: all(not pid_alive(w.pid) for w in stopped), what="the stopped workers to exit")
    assert depth(live_nats.url, "async") == 0

    # An admin changes the pool: its worker is replaced (drained) by one with the new concurrency.
    [old] = scaler.scaler.running["async"]
    set_pool("async", concurrency=2)
    wait_for(lambda: Worker.objects.filter(pool="async", concurrency=2, stopped_at__isnull=True).exists(),
             what="a worker with the new concurrency")
    wait_for(lambda: not pid_alive(old.pid), what="the old worker to drain and exit")
    assert scaler.replicas("async") == 1
