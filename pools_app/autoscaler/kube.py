"""`neutrino autoscale`: the Kubernetes actuator of the autoscaler.

Every `--interval-s` (5 s) it reads each NATS pool's queue depth from JetStream, decides
(`pools_app.autoscaler.decide`, the same decision as `neutrino dev`), records the decision and sets the
replicas of the pool's Deployment (`neutrino-pool-<name>`, rendered by `neutrino up`) through the
`deployments/<name>/scale` subresource, as `kubectl scale` does. It also keeps the stream and one
consumer per enabled NATS pool in place, so a pool at zero replicas still has its depth known.

The fast pool (mode http) is not touched: its HorizontalPodAutoscaler scales it on CPU. A pool
whose Deployment does not exist yet is reported and skipped (run `neutrino up`). Run one autoscaler
per namespace: two would each act on their own history.

What it cannot do: it sets the Deployment's desired replicas; whether pods start (GPU nodes free,
images pulled) is the cluster's business, and the next decision sees the same queue until they do.
A worker pod being stopped gets SIGTERM and `terminationGracePeriodSeconds` to drain, like a local
worker. With no history (a fresh start, or `--once`), it removes no worker before it has watched a
pool for the pool's scale-down delay.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass
from typing import TextIO

from pools_app.autoscaler.decide import Decision
from pools_app.autoscaler.loop import Autoscaler, read_depths, republish_lost, scaled_pools, sync_topology
from pools_app.k8s.client import KubeClient, KubeError, api_client
from pools_app.k8s.render import deployment_name
from tasks_app.core.conf import neutrino_settings
from workers.engine.broker.bridge import NatsBridge
from workers.engine.topology import ConsumerSettings

DEFAULT_NAMESPACE = "neutrino"
TOPOLOGY_EVERY_S = 30.0


@dataclass(frozen=True)
class AutoscaleOptions:
    namespace: str = ""  # "": NEUTRINO_KUBE_NAMESPACE, else "neutrino"
    interval_s: float = 5.0
    once: bool = False
    context: str | None = None
    kube_url: str = ""  # "": NEUTRINO_KUBE_URL, else in-cluster, else the kubeconfig


class KubeScaler:
    """One tick at a time: depths -> decisions -> `deployments/<name>/scale` patches."""

    def __init__(self, client: KubeClient, bridge: NatsBridge, *, namespace: str, consumer: ConsumerSettings,
                 out: TextIO, err: TextIO, stream_replicas: int = 1) -> None:
        self.client = client
        self.bridge = bridge
        self.namespace = namespace
        self.consumer = consumer
        self.stream_replicas = stream_replicas
        self.out = out
        self.err = err
        self.autoscaler = Autoscaler(actuator="kubernetes")
        self._topology: tuple[str, ...] | None = None
        self._topology_at = 0.0
        self._reported: set[str] = set()

    def step(self) -> dict[str, Decision]:
        """One tick; returns the decisions made (empty when NATS did not answer)."""
        pools = scaled_pools()
        enabled = tuple(sorted(p.name for p in pools if p.enabled))
        due = enabled != self._topology or time.monotonic() - self._topology_at >= TOPOLOGY_EVERY_S
        if enabled and due and sync_topology(self.bridge, enabled, self.consumer, replicas=self.stream_replicas):
            self._topology, self._topology_at = enabled, time.monotonic()
        depths = read_depths(self.bridge, [p.name for p in pools])
        if depths is None:
            self._say_once("nats", "queue depth unknown (NATS does not answer); replicas stay as they are", self.err)
            return {}
        self._reported.discard("nats")
        republish_lost(self.bridge, depths)
        current: dict[str, int] = {}
        for pool in pools:
            name = deployment_name(pool.name)
            try:
                scale = self.client.get_scale(self.namespace, name)
            except KubeError as exc:
                if exc.status == 404 and "namespaces" not in exc.message:
                    self._say_once(f"missing:{pool.name}", f"pool {pool.name}: no Deployment {self.namespace}/{name} "
                                   "yet (run `neutrino up`); skipped", self.err)
                else:
                    print(f"pool {pool.name}: cannot read the scale of {self.namespace}/{name}: {exc}", file=self.err)
                continue
            self._reported.discard(f"missing:{pool.name}")
            current[pool.name] = int((scale.get("spec") or {}).get("replicas") or 0)
        known = [pool for pool in pools if pool.name in current]
        decisions = self.autoscaler.tick(pools=known, depths=depths, current=current)
        for pool_name, decision in decisions.items():
            if decision.desired == current[pool_name]:
                continue
            name = deployment_name(pool_name)
            try:
                self.client.patch_scale(self.namespace, name, decision.desired)
            except KubeError as exc:
                print(f"pool {pool_name}: cannot scale {self.namespace}/{name} to {decision.desired}: {exc}",
                      file=self.err)
                continue
            print(f"pool {pool_name}: {current[pool_name]} -> {decision.desired} replicas ({decision.reason})",
                  file=self.out, flush=True)
        return decisions

    def _say_once(self, key: str, message: str, stream: TextIO) -> None:
        if key not in self._reported:
            self._reported.add(key)
            print(message, file=stream, flush=True)


def autoscale_command(options: AutoscaleOptions, *, out: TextIO, err: TextIO,
                      stop: threading.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or `stop` is set), or one tick with `once`. Returns the exit code."""
    from django.conf import settings
    from django.db import DatabaseError


    conf = neutrino_settings()
    if not conf.nats_url:
        print("neutrino autoscale: no NATS server configured: pass --nats-url or set NEUTRINO_NATS_URL", file=err)
        return 2
    if options.interval_s <= 0:
        print(f"neutrino autoscale: --interval-s must be positive, not {options.interval_s}", file=err)
        return 2
    namespace = options.namespace or settings.NEUTRINO_KUBE_NAMESPACE or DEFAULT_NAMESPACE
    try:
        client = KubeClient(api_client(kube_url=options.kube_url or settings.NEUTRINO_KUBE_URL,
                                       context=options.context))
    except KubeError as exc:
        print(f"neutrino autoscale: {exc}", file=err)
        return 2
    bridge = NatsBridge(conf.nats_url, name="neutrino-autoscaler").start()
    scaler = KubeScaler(client, bridge, namespace=namespace, out=out, err=err, stream_replicas=conf.stream_replicas,
                        consumer=ConsumerSettings(ack_wait_s=conf.ack_wait_s, max_deliver=conf.max_deliver))
    stop = stop or threading.Event()
    if not options.once and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: stop.set())
    print(f"neutrino autoscale: scaling the NATS pools' Deployments in {client.host} namespace {namespace} "
          f"every {options.interval_s:g} s", file=out, flush=True)
    try:
        while True:
            try:
                scaler.step()
            except DatabaseError as exc:  # the pools or the record: try again next tick
                print(f"neutrino autoscale: database error ({exc}); trying again", file=err, flush=True)
            if options.once or stop.wait(options.interval_s):
                break
    finally:
        bridge.close(timeout_s=2.0)
        client.close()
    return 0
