"""The fake Kubernetes API server itself, as `neutrino up` and the autoscaler use it.

Both clients are exercised: Neutrino's small `KubeClient` and the `kubernetes` package's own typed
`AppsV1Api`, each through a `kubernetes.client.Configuration` whose host is the fake's URL.
"""

from __future__ import annotations

import json
import urllib.request

import pytest
from kubernetes import client as k8s

from pools_app.k8s.client import KubeClient, KubeError, api_client
from pools_app.k8s.render import deployment_name, pool_deployment
from tests.k8s.conftest import gpu_pool, memory_pool


def applied(fake_url: str, *pools) -> KubeClient:
    kube = KubeClient(api_client(kube_url=fake_url))
    for pool in pools:
        obj = pool_deployment(pool)
        obj["metadata"]["namespace"] = "neutrino"
        kube.apply(obj)
    return kube


def test_apply_get_and_list_by_label(fake_kube):
    kube = applied(fake_kube.url, gpu_pool(), memory_pool())
    stored = kube.get("apps/v1", "Deployment", "neutrino", "neutrino-pool-train")
    assert stored["metadata"]["generation"] == 1 and stored["metadata"]["uid"]
    assert stored["spec"]["replicas"] == 0
    assert kube.get("apps/v1", "Deployment", "neutrino", "nope") is None
    pools = kube.list_objects("apps/v1", "Deployment", "neutrino",
                              label_selector="app.kubernetes.io/component=pool-worker")
    assert sorted(d["metadata"]["name"] for d in pools) == ["neutrino-pool-big-mem", "neutrino-pool-train"]
    only = kube.list_objects("apps/v1", "Deployment", "neutrino", label_selector="neutrino.dev/pool=train")
    assert [d["metadata"]["name"] for d in only] == ["neutrino-pool-train"]


def test_scale_subresource_with_neutrinos_client(fake_kube):
    kube = applied(fake_kube.url, memory_pool())
    name = deployment_name("big_mem")
    scale = kube.get_scale("neutrino", name)
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 1
    assert scale["status"]["selector"] == "app.kubernetes.io/name=neutrino,neutrino.dev/pool=big_mem"
    assert kube.patch_scale("neutrino", name, 5)["spec"]["replicas"] == 5
    deployment = fake_kube.get("Deployment", "neutrino", name)
    assert deployment["spec"]["replicas"] == 5
    assert deployment["metadata"]["generation"] == 2
    assert deployment["status"]["readyReplicas"] == 5  # rollouts complete at once by default
    assert fake_kube.writes()[-1].content_type == "application/merge-patch+json"


def test_scale_subresource_with_the_typed_kubernetes_client(fake_kube):
    applied(fake_kube.url, memory_pool())
    configuration = k8s.Configuration()
    configuration.host = fake_kube.url
    apps = k8s.AppsV1Api(k8s.ApiClient(configuration))
    name = deployment_name("big_mem")
    assert apps.read_namespaced_deployment_scale(name, "neutrino").spec.replicas == 1
    apps.patch_namespaced_deployment_scale(name, "neutrino", {"spec": {"replicas": 3}})
    assert apps.read_namespaced_deployment(name, "neutrino").spec.replicas == 3
    apps.patch_namespaced_deployment_scale(name, "neutrino", [{"op": "replace", "path": "/spec/replicas", "value": 0}])
    assert apps.read_namespaced_deployment_scale(name, "neutrino").spec.replicas == 0
    listed = apps.list_namespaced_deployment("neutrino", label_selector="neutrino.dev/pool=big_mem")
    assert [d.metadata.name for d in listed.items] == [name]


def test_rollouts_complete_after_the_configured_reads(fake_kube):
    fake_kube.rollout_polls = 2
    kube = applied(fake_kube.url, memory_pool())
    reads = [kube.get("apps/v1", "Deployment", "neutrino", "neutrino-pool-big-mem")["status"] for _ in range(2)]
    assert reads[0]["readyReplicas"] == 0
    assert reads[1]["readyReplicas"] == 1 and reads[1]["observedGeneration"] == 1


def test_refusals_are_kubernetes_status_objects(fake_kube):
    kube = applied(fake_kube.url)
    obj = pool_deployment(memory_pool())
    obj["metadata"]["namespace"] = "elsewhere"
    with pytest.raises(KubeError) as missing:
        kube.apply(obj)
    assert missing.value.status == 404 and "namespaces \"elsewhere\" not found" in missing.value.message
    fake_kube.fail("Deployment", "neutrino-pool-big-mem", code=409, message="conflict with kubectl")
    obj["metadata"]["namespace"] = "neutrino"
    with pytest.raises(KubeError, match="409 Conflict: conflict with kubectl"):
        kube.apply(obj)
    request = urllib.request.Request(f"{fake_kube.url}/apis/apps/v1/namespaces/neutrino/deployments/x",
                                     method="PATCH", data=b"{}", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 415
    assert json.loads(refused.value.read())["kind"] == "Status"
