"""Pool metrics, read at scrape time: the queue in JetStream, the tasks waiting in the database, the workers'
heartbeats and the autoscaler's latest decision. The same numbers whichever server answers the scrape.

    neutrino_pool_backlog{pool}                       messages waiting in the stream (not yet delivered)
    neutrino_pool_in_flight{pool}                     messages delivered to a worker, not yet acknowledged
    neutrino_pool_oldest_waiting_seconds{pool}        age of the oldest pending/queued task (0: none waits)
    neutrino_pool_workers{pool, state}                worker processes by heartbeat: live, lost
    neutrino_pool_replicas_desired{pool}              the autoscaler's latest decision
    neutrino_pool_replicas_current{pool}              the replicas it saw then (local processes or Deployment)
    neutrino_pool_scaling_decision_age_seconds{pool}  how old that decision is (a stopped autoscaler shows here)
    neutrino_pool_depth_known                         1 when JetStream answered this scrape, else 0
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from pools_app.models import Pool, PoolMode
from pools_app.selectors import pool_oldest_waiting, scaling_latest, worker_states
from workers.engine.topology import PoolDepth


class PoolCollector:
    """A prometheus-client collector; `depths` reads JetStream (None: unknown)."""

    def __init__(self, *, heartbeat_s: float, depths: Callable[[list[str]], dict[str, PoolDepth] | None]) -> None:
        self.heartbeat_s = heartbeat_s
        self.read_depths = depths

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        pools = [p.name for p in Pool.objects.filter(mode=PoolMode.NATS).order_by("name")]
        depths = self.read_depths(pools)
        known = GaugeMetricFamily("neutrino_pool_depth_known", "1 when JetStream answered this scrape, else 0.")
        known.add_metric([], 1.0 if depths is not None else 0.0)
        yield known
        backlog = GaugeMetricFamily("neutrino_pool_backlog", "Messages waiting in the pool's stream, not yet "
                                    "delivered to a worker.", labels=["pool"])
        in_flight = GaugeMetricFamily("neutrino_pool_in_flight", "Messages delivered to a worker of the pool, "
                                      "not yet acknowledged (running or about to).", labels=["pool"])
        for name, depth in sorted((depths or {}).items()):
            backlog.add_metric([name], depth.pending)
            in_flight.add_metric([name], depth.in_flight)
        yield backlog
        yield in_flight
        oldest = GaugeMetricFamily("neutrino_pool_oldest_waiting_seconds", "Age of the pool's oldest pending or "
                                   "queued task; 0 when none waits.", labels=["pool"])
        waiting = pool_oldest_waiting(pools=pools)
        for name in pools:
            created = waiting.get(name)
            oldest.add_metric([name], max(0.0, (now - created).total_seconds()) if created else 0.0)
        yield oldest
        workers = GaugeMetricFamily("neutrino_pool_workers", "Worker processes of the pool by heartbeat state "
                                    "(lost: silent for 3 heartbeat intervals).", labels=["pool", "state"])
        states = Counter((s.worker.pool, s.state) for s in worker_states(now=now, heartbeat_s=self.heartbeat_s))
        for name in pools:
            for state in ("live", "lost"):
                workers.add_metric([name, state], states.get((name, state), 0))
        yield workers
        desired = GaugeMetricFamily("neutrino_pool_replicas_desired", "Replicas the autoscaler's latest "
                                    "decision wants.", labels=["pool"])
        current = GaugeMetricFamily("neutrino_pool_replicas_current", "Replicas the autoscaler saw at its "
                                    "latest decision (worker processes, or the Deployment's).", labels=["pool"])
        age = GaugeMetricFamily("neutrino_pool_scaling_decision_age_seconds", "Age of the autoscaler's latest "
                                "decision for the pool.", labels=["pool"])
        for name, row in sorted(scaling_latest(pools=pools).items()):
            desired.add_metric([name], row.desired)
            current.add_metric([name], row.current)
            age.add_metric([name], max(0.0, (now - row.at).total_seconds()))
        yield desired
        yield current
        yield age
