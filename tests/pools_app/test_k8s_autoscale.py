"""`neutrino autoscale`: decisions from a real nats-server's queue depth, applied to pool Deployments on
`tests/fakes/k8s_api.py`, a FAKE Kubernetes API server (no cluster runs here: it only stores objects)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from typing import Any

import nats
import pytest

from neutrino_site.cli import main
from pools_app.autoscaler.kube import AutoscaleOptions, KubeScaler, autoscale_command
from pools_app.k8s.client import KubeClient, api_client
from pools_app.k8s.render import deployment_name, pool_deployment
from pools_app.models import Pool, ScalingDecision
from pools_app.selectors import forget_cached_pools
from tests.fakes.k8s_api import FakeKubeAPI
from workers.engine.broker.bridge import NatsBridge
from workers.engine.topology import STREAM, ConsumerSettings, ensure_stream, task_subject

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]
NS = "neutrino"


def nats_run(url: str, fn: Any) -> Any:
    async def run() -> Any:
        nc = await nats.connect(url)
        try:
            return await fn(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(run())


def publish(url: str, pool: str, count: int) -> None:
    async def send(js: Any) -> None:
        await ensure_stream(js, ["async", "gpu"])
        for _ in range(count):
            await js.publish(task_subject(pool, "pl_infer"), b"{}")

    nats_run(url, send)


def purge(url: str) -> None:
    async def clear(js: Any) -> None:
        try:
            await js.purge_stream(STREAM)
        except nats.js.errors.NotFoundError:
            pass

    nats_run(url, clear)


@pytest.fixture
def cluster(live_nats, default_pools) -> Iterator[FakeKubeAPI]:
    """The fake API server with the Deployments `neutrino up` renders for async and gpu (not fast)."""
    purge(live_nats.url)
    Pool.objects.filter(name="gpu").update(scale_down_delay_s=0)
    forget_cached_pools()
    with FakeKubeAPI(namespaces={NS}) as fake:
        for pool in Pool.objects.filter(name__in=["async", "gpu"]):
            obj = pool_deployment(pool)
            obj["metadata"]["namespace"] = NS
            fake.put(obj)
        yield fake


def replicas(fake: FakeKubeAPI, pool: str) -> int:
    obj = fake.get("Deployment", NS, deployment_name(pool))
    assert obj is not None
    return int(obj["spec"]["replicas"])


@pytest.fixture
def scaler(cluster, live_nats) -> Iterator[tuple[KubeScaler, io.StringIO, io.StringIO]]:
    bridge = NatsBridge(live_nats.url, name="test-k8s-autoscaler").start()
    out, err = io.StringIO(), io.StringIO()
    client = KubeClient(api_client(kube_url=cluster.url))
    yield KubeScaler(client, bridge, namespace=NS, consumer=ConsumerSettings(), out=out, err=err), out, err
    bridge.close(timeout_s=2.0)
    client.close()


def test_gpu_deployment_scales_from_zero_and_back_through_the_scale_subresource(cluster, scaler, live_nats):
    kube, out, err = scaler
    assert replicas(cluster, "gpu") == 0 and replicas(cluster, "async") == 1

    kube.step()  # nothing waits: no write at all
    assert cluster.writes() == []

    publish(live_nats.url, "gpu", 3)  # the consumer exists already: the autoscaler created it
    decisions = kube.step()
    assert decisions["gpu"].desired == 1 and decisions["async"].desired == 1
    assert replicas(cluster, "gpu") == 1
    [write] = cluster.writes()
    assert (write.method, write.path) == ("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/neutrino-pool-gpu/scale")
    assert write.body == {"spec": {"replicas": 1}}
    assert "pool gpu: 0 -> 1 replicas (scale from zero" in out.getvalue()

    purge(live_nats.url)  # the worker pod did the tasks
    kube.step()
    assert replicas(cluster, "gpu") == 0  # scale_down_delay_s=0: at once
    rows = list(ScalingDecision.objects.filter(pool="gpu", actuator="kubernetes").order_by("at"))
    assert [(r.pending, r.current, r.desired) for r in rows] == [(0, 0, 0), (3, 0, 1), (0, 1, 0)]
    assert err.getvalue() == ""


def test_async_respects_max_and_waits_the_delay_before_scaling_down(cluster, scaler, live_nats):
    kube, _, _ = scaler
    publish(live_nats.url, "async", 100)
    kube.step()
    assert replicas(cluster, "async") == 4  # max_replicas
    purge(live_nats.url)
    kube.step()
    assert replicas(cluster, "async") == 4  # the 300 s delay has not passed
    assert "hold 4" in ScalingDecision.objects.filter(pool="async").latest("at").reason


def test_a_missing_deployment_or_a_refusal_is_reported_and_the_others_go_on(cluster, scaler, live_nats):
    kube, _, err = scaler
    Pool.objects.create(name="train", kind="gpu", mode="nats", min_replicas=1, max_replicas=2, gpu_count=1)
    cluster.fail("Deployment", "neutrino-pool-async", code=403, message="deployments.apps/scale is forbidden")
    publish(live_nats.url, "async", 30)
    publish(live_nats.url, "gpu", 1)
    kube.step()
    kube.step()
    assert replicas(cluster, "gpu") == 1 and replicas(cluster, "async") == 1
    text = err.getvalue()
    assert text.count("no Deployment neutrino/neutrino-pool-train yet (run `neutrino up`)") == 1  # said once
    assert "cannot scale neutrino/neutrino-pool-async to 3" in text and "403" in text


def test_the_command_runs_once_against_the_fake(cluster, live_nats, capsys):
    publish(live_nats.url, "gpu", 2)
    assert main(["autoscale", "--once", "--namespace", NS, "--kube-url", cluster.url]) == 0
    assert replicas(cluster, "gpu") == 1
    assert "pool gpu: 0 -> 1 replicas" in capsys.readouterr().out


def test_the_command_refuses_bad_settings(cluster, settings):
    err = io.StringIO()
    assert autoscale_command(AutoscaleOptions(interval_s=0, kube_url=cluster.url), out=io.StringIO(), err=err) == 2
    assert "--interval-s must be positive" in err.getvalue()
