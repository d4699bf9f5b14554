"""The local actuator of the autoscaler: worker processes on this machine, as many as each pool's decision says.

`neutrino dev` calls `LocalScaler.step()` every couple of seconds. One step:

1. brings the stream and one consumer per enabled NATS pool up to date (on a change, and every 30 s),
   so a pool's depth is known, and its messages kept, before any of its workers runs;
2. reads each NATS pool's depth (pending + in flight) from JetStream, decides (`pools_app.autoscaler.decide`)
   and records the decision (`ScalingDecision`);
3. starts workers (`neutrino serve --mode nats --pool P`) up to the decision, or stops the surplus
   with SIGTERM: a stopped worker takes no new message, finishes what it runs within
   NEUTRINO_WORKER_GRACE_S and hands back the rest, so no task is lost. Idle workers (by their
   heartbeats) are stopped first. One that has not exited 5 s past the grace is killed;
4. restarts a worker that died without being told to.

What it cannot do: it sees only the processes it started. Workers started by hand (`neutrino serve
--mode nats`) also serve the pool, but are not counted or stopped. While NATS does not answer, no
decision is made and the workers stay as they are.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError

from pools_app.autoscaler.loop import Autoscaler, read_depths, republish_lost, scaled_pools, sync_topology
from pools_app.models import Worker
from workers.engine.broker.bridge import NatsBridge
from workers.engine.processes import stop_process
from workers.engine.topology import ConsumerSettings

logger = logging.getLogger("neutrino.dev")

TOPOLOGY_EVERY_S = 30.0
RESTART_BACKOFF_S = 1.0
KILL_AFTER_GRACE_S = 5.0


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)
    shape: tuple[object, ...] = ()  # what of its pool it was started with (concurrency, kind)

    def start(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(self.argv, env=env, start_new_session=True)
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float) -> None:
        self.terminate()
        self.wait_or_kill(timeout_s)

    def wait_or_kill(self, timeout_s: float) -> None:
        """Wait for a child already told to stop (a second SIGTERM would cut its grace period short)."""
        if self.process is not None and stop_process(self.process, timeout_s, terminate=False):
            logger.warning("%s did not stop within %.0f s; it was killed", self.name, timeout_s)


@dataclass
class _Stopping:
    child: Child
    kill_at: float


@dataclass
class ScalerSettings:
    """What the local actuator needs besides the database: how to start a worker, and its limits."""

    worker_argv: Callable[[str], list[str]]  # pool name -> argv of one worker
    env: dict[str, str]
    grace_s: float  # the workers' NEUTRINO_WORKER_GRACE_S
    consumer: ConsumerSettings
    stream_replicas: int = 1  # NEUTRINO_STREAM_REPLICAS
    say: Callable[[str], None] = logger.info


class LocalScaler:
    def __init__(self, settings: ScalerSettings, bridge: NatsBridge) -> None:
        self.settings = settings
        self.bridge = bridge
        self.autoscaler = Autoscaler(actuator="local")
        self.running: dict[str, list[Child]] = {}
        self.stopping: list[_Stopping] = []
        self._topology: tuple[str, ...] | None = None
        self._topology_at = 0.0
        self._depth_known = True
        self._shapes: dict[str, tuple[object, ...]] = {}

    # --- one tick ------------------------------------------------------------------------------

    def step(self) -> None:
        pools = scaled_pools()
        enabled = tuple(sorted(p.name for p in pools if p.enabled))
        now = time.monotonic()
        due = enabled != self._topology or now - self._topology_at >= TOPOLOGY_EVERY_S
        if enabled and due and sync_topology(self.bridge, enabled, self.settings.consumer,
                                             replicas=self.settings.stream_replicas):
            self._topology, self._topology_at = enabled, now
        self._reap()
        self._heal()
        self._replace_outdated(pools)
        for name in sorted(set(self.running) - {p.name for p in pools}):
            self._scale(name, 0, "pool was deleted or is no longer a NATS pool")
        depths = read_depths(self.bridge, [p.name for p in pools])
        if depths is None:
            if self._depth_known:
                self.settings.say("queue depth unknown (NATS does not answer); workers stay as they are")
            self._depth_known = False
            return
        self._depth_known = True
        republish_lost(self.bridge, depths)
        current = {p.name: len(self.running.get(p.name, [])) for p in pools}
        for name, decision in self.autoscaler.tick(pools=pools, depths=depths, current=current).items():
            if decision.desired != current[name]:
                self._scale(name, decision.desired, decision.reason)

    def replicas(self, pool: str) -> int:
        return len(self.running.get(pool, []))

    def children(self) -> list[Child]:
        return [child for group in self.running.values() for child in group]

    # --- acting --------------------------------------------------------------------------------

    def _scale(self, pool: str, desired: int, reason: str) -> None:
        group = self.running.setdefault(pool, [])
        before = len(group)
        while len(group) < desired:
            child = Child(f"worker[{pool}]", self.settings.worker_argv(pool), shape=self._shapes.get(pool, ()))
            child.start(self.settings.env)
            group.append(child)
        if len(group) > desired:
            for child in self._idlest(pool, group)[: len(group) - desired]:
                group.remove(child)
                self._retire(child)
        if not group:
            self.running.pop(pool, None)
        pids = ", ".join(str(c.pid) for c in group) or "none"
        self.settings.say(f"pool {pool}: {before} -> {desired} worker(s) ({reason}); pids: {pids}")

    def _retire(self, child: Child) -> None:
        """SIGTERM: the worker drains; killed only if it outlives its grace period."""
        child.terminate()
        self.stopping.append(_Stopping(child, time.monotonic() + self.settings.grace_s + KILL_AFTER_GRACE_S))

    def _replace_outdated(self, pools: list[Any]) -> None:
        """Workers started before their pool's concurrency or kind changed drain and go; the decision
        of this same step starts their replacements (the replicas are below the figure at once)."""
        self._shapes = {p.name: (p.concurrency, p.kind) for p in pools}
        for name, group in self.running.items():
            shape = self._shapes.get(name)
            if shape is None:
                continue  # deleted: the step stops its workers
            for child in [c for c in group if c.shape != shape]:
                group.remove(child)
                self.settings.say(f"pool {name} changed (concurrency {shape[0]}, kind {shape[1]}); replacing "
                                  f"{child.name} (pid {child.pid}): it drains")
                self._retire(child)

    def _idlest(self, pool: str, group: list[Child]) -> list[Child]:
        """The pool's workers, those running the fewest tasks (by their last heartbeat) first, newest first."""
        host = socket.gethostname()
        try:
            busy = dict(Worker.objects.filter(pool=pool, host=host, pid__in=[c.pid for c in group],
                                              stopped_at__isnull=True).values_list("pid", "running"))
        except DatabaseError:
            busy = {}
        return sorted(group, key=lambda c: (busy.get(c.pid, 0), -c.started_at))

    def _reap(self) -> None:
        now = time.monotonic()
        for entry in list(self.stopping):
            child = entry.child
            if not child.alive():
                self.stopping.remove(entry)
                code = child.process.returncode if child.process is not None else None
                logger.info("%s (pid %d) stopped with %s", child.name, child.pid, code)
            elif now >= entry.kill_at:
                self.settings.say(f"{child.name} (pid {child.pid}) did not stop within its grace; killing it")
                assert child.process is not None
                child.process.kill()

    def _heal(self) -> None:
        """Restart workers that died without being told to (after a short pause)."""
        for group in self.running.values():
            for child in group:
                if not child.alive() and time.monotonic() - child.started_at > RESTART_BACKOFF_S:
                    code = child.process.returncode if child.process else None
                    child.restarts += 1
                    self.settings.say(f"{child.name} (pid {child.pid}) exited with {code}; restarting it "
                                      f"(restart #{child.restarts})")
                    child.start(self.settings.env)

    # --- the end -------------------------------------------------------------------------------

    def stop_all(self, timeout_s: float) -> None:
        """SIGTERM every worker at once, then wait for each (killing those past `timeout_s`)."""
        everyone = [*self.children(), *(entry.child for entry in self.stopping)]
        for child in everyone:
            child.terminate()
        deadline = time.monotonic() + timeout_s
        for child in everyone:
            child.wait_or_kill(max(0.1, deadline - time.monotonic()))
        self.running.clear()
        self.stopping.clear()
