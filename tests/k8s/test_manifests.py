"""Every manifest Neutrino renders is valid Kubernetes, runs a command the CLI accepts, and is shaped safely."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from neutrino_site.cli import build_parser, main
from pools_app.k8s.render import (
    K8S_DIR,
    MANIFEST_IMAGE,
    OVERLAYS,
    SNAPSHOT_FILES,
    default_pools,
    deployment_name,
    is_pool_deployment,
    render,
    snapshot_text,
)
from tests.k8s.conftest import gpu_pool, memory_pool
from tests.servers import ROOT
from workers.engine.topology import STREAM, consumer_name

# The Kubernetes version the manifests are checked against (kubernetes-validate ships its schemas).
KUBERNETES_VERSION = "1.30.0"


def rendered(overlay: str) -> list[dict]:
    return render(overlay=overlay, pools=[*default_pools(), gpu_pool(), memory_pool()])


def by_name(objects: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def pod_containers(obj: dict) -> list[dict]:
    if obj["kind"] not in {"Deployment", "StatefulSet", "Job"}:
        return []
    pod = obj["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def neutrino_containers(objects: list[dict]) -> list[tuple[dict, dict]]:
    return [(obj, c) for obj in objects for c in pod_containers(obj) if c["name"] == "neutrino"]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_every_object_validates_against_the_pinned_kubernetes_schema(overlay):
    objects = rendered(overlay)
    assert objects
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{overlay}: {obj['kind']} {obj['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_neutrino_k8s_render_prints_valid_yaml_with_the_database_pools(extra_pools, capsys):
    assert main(["k8s", "render", "--overlay", "production", "--namespace", "tasks"]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    for obj in documents:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        if obj["kind"] not in {"Namespace"}:
            assert obj["metadata"]["namespace"] == "tasks"
    pools = {o["metadata"]["labels"]["neutrino.dev/pool"]: o for o in documents if is_pool_deployment(o)}
    assert sorted(pools) == ["async", "big_mem", "gpu", "train"]  # every NATS pool, not the fast (http) one
    gpu = pools["train"]["spec"]["template"]["spec"]
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert gpu["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert gpu["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert gpu["containers"][0]["image"] == "registry.example.com/neutrino-cuda:12.4"
    memory = pools["big_mem"]
    assert memory["metadata"]["name"] == "neutrino-pool-big-mem"
    assert memory["spec"]["replicas"] == 1
    assert memory["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "1", "memory": "16Gi"}, "limits": {"memory": "32Gi"}}


def _subcommands(parser: argparse.ArgumentParser) -> set[str]:
    return {name for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name in action.choices}


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_every_neutrino_command_in_the_manifests_parses_with_the_cli(overlay):
    parser = build_parser()
    commands = _subcommands(parser)
    checked = 0
    for obj, container in neutrino_containers(rendered(overlay)):
        args = container["args"]
        if args[0] not in commands:
            assert args == ["autoscale"], f"{obj['metadata']['name']}: unknown command {shlex.join(args)}"
            continue  # `neutrino autoscale` arrives with the autoscaler (issue 6); this test then covers it
        try:
            parsed = parser.parse_args(args)
        except SystemExit:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: `neutrino {shlex.join(args)}` does not parse")
        checked += 1
        if is_pool_deployment(obj):
            pool = obj["metadata"]["labels"]["neutrino.dev/pool"]
            assert (parsed.command, parsed.mode, parsed.pool) == ("serve", "nats", pool)
            assert parsed.nats_url is None  # NEUTRINO_NATS_URL, from the Secret neutrino-nats
            assert parsed.concurrency >= 1
    assert checked >= 4


def test_the_autoscaler_command_parses_once_it_exists():
    parser = build_parser()
    if "autoscale" not in _subcommands(parser):
        pytest.skip("`neutrino autoscale` is not in the CLI yet (issue 6)")
    parser.parse_args(["autoscale"])


def test_pool_snapshots_in_the_base_are_the_rendering_of_the_default_pools():
    for pool in default_pools():
        assert SNAPSHOT_FILES[pool.name].read_text() == snapshot_text(pool), (
            f"{SNAPSHOT_FILES[pool.name]} is stale: regenerate it with `python -m pools_app.k8s.render`")


def test_database_pools_replace_the_snapshots_without_duplicates():
    objects = render(overlay="base", pools=[gpu_pool(name="gpu"), memory_pool()])
    deployments = [o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"]
    assert len(deployments) == len(set(deployments))
    assert sorted(n for n in deployments if n.startswith("neutrino-pool-")) == [
        "neutrino-pool-big-mem", "neutrino-pool-gpu"]  # no async: it is not in these pools
    assert not any(n in deployments for n in ("neutrino-async", "neutrino-gpu"))
    # Rendering the default pools gives exactly the kustomize base.
    assert render(overlay="base", pools=default_pools()) == render(overlay="base", pools=None)


def test_pool_deployment_replicas_names_and_refusals():
    from pools_app.k8s.render import RenderError, pool_deployment, pool_deployments

    assert pool_deployment(memory_pool(min_replicas=2))["spec"]["replicas"] == 2
    assert pool_deployment(memory_pool(min_replicas=2, enabled=False))["spec"]["replicas"] == 0
    assert deployment_name("Big_Mem") == "neutrino-pool-big-mem"
    assert "strategy" not in pool_deployment(memory_pool())["spec"]
    assert pool_deployment(gpu_pool())["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    with pytest.raises(RenderError, match="would both be Deployment 'neutrino-pool-big-mem'"):
        pool_deployments([memory_pool(name="big_mem"), memory_pool(name="Big_Mem")])
    with pytest.raises(RenderError, match="at most 63"):
        pool_deployment(memory_pool(name="p" * 64))


def test_neutrino_containers_are_non_root_read_only_bounded_and_probed():
    objects = rendered("base")
    for obj, container in neutrino_containers(objects):
        where = f"{obj['kind']} {obj['metadata']['name']}"
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], where
        assert {"name": "tmp", "emptyDir": {}} in pod["volumes"], where
        assert container["resources"]["requests"] and container["resources"]["limits"], where
        assert container["image"] == MANIFEST_IMAGE or is_pool_deployment(obj), where
        env = {e["name"]: e for e in container["env"]}
        for key in ("DATABASE_URL", "DJANGO_SECRET_KEY"):
            assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "neutrino-secrets", "key": key}, where
    for name in ("neutrino-gateway", "neutrino-fast"):
        container = by_name(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        assert {p["containerPort"] for p in container["ports"]} == {8000, 8001}
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    nats = by_name(objects, "StatefulSet", "nats")["spec"]["template"]["spec"]
    assert all(c["securityContext"]["readOnlyRootFilesystem"] for c in nats["containers"])
    assert nats["securityContext"]["runAsNonRoot"] is True


def test_the_system_as_the_issue_lists_it():
    objects = rendered("base")
    nats = by_name(objects, "StatefulSet", "nats")
    assert nats["spec"]["replicas"] == 3
    assert nats["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    config = by_name(objects, "ConfigMap", "nats-config")["data"]["nats.conf"]
    assert "sync_interval: always" in config and "store_dir: /data/jetstream" in config
    assert by_name(objects, "Service", "nats-headless")["spec"]["clusterIP"] == "None"
    exporter = next(c for c in nats["spec"]["template"]["spec"]["containers"] if c["name"] == "metrics")
    assert "-jsz=consumers" in exporter["args"]
    assert by_name(objects, "Deployment", "neutrino-gateway")["spec"]["replicas"] == 2
    assert by_name(objects, "Service", "neutrino-gateway")["spec"]["type"] == "ClusterIP"  # the Ingress publishes it
    fast = by_name(objects, "Deployment", "neutrino-fast")
    assert fast["spec"]["replicas"] == 3
    assert fast["spec"]["template"]["spec"]["containers"][0]["args"][:6] == [
        "serve", "--mode", "http", "--pool", "fast", "--port"]
    assert by_name(objects, "Service", "neutrino-fast")["spec"]["type"] == "ClusterIP"
    hpa = by_name(objects, "HorizontalPodAutoscaler", "neutrino-fast-hpa")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 20)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert by_name(objects, "Deployment", "neutrino-pool-gpu")["spec"]["replicas"] == 0
    assert by_name(objects, "ConfigMap", "neutrino-gateway")["data"]["NEUTRINO_SYNC_UPSTREAM"] == (
        "http://neutrino-fast:8000")
    for name in ("nats", "neutrino-gateway"):
        by_name(objects, "PodDisruptionBudget", name)
    job = next(o for o in objects if o["kind"] == "Job")
    assert job["metadata"]["name"].startswith("neutrino-migrate-")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["manage", "migrate"]


def test_the_autoscaler_gets_the_least_rbac_it_needs():
    objects = rendered("base")
    role = by_name(objects, "Role", "neutrino-autoscaler")
    assert role["rules"] == [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch", "update"]},
    ]
    assert not any(o["kind"] in {"ClusterRole", "ClusterRoleBinding"} for o in objects)
    binding = by_name(objects, "RoleBinding", "neutrino-autoscaler")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "neutrino-autoscaler", "namespace": "neutrino"}]
    moved = render(overlay="base", pools=None, namespace="jobs")
    assert by_name(moved, "RoleBinding", "neutrino-autoscaler")["subjects"][0]["namespace"] == "jobs"
    pod = by_name(objects, "Deployment", "neutrino-autoscaler")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "neutrino-autoscaler"
    others = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] != "neutrino-autoscaler"]
    assert all(o["spec"]["template"]["spec"]["automountServiceAccountToken"] is False for o in others)


def test_single_node_is_sqlite_on_one_volume_one_gateway_one_nats():
    objects = rendered("single-node")
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert ("Deployment", "neutrino-fast") not in names
    assert ("HorizontalPodAutoscaler", "neutrino-fast-hpa") not in names
    assert ("PodDisruptionBudget", "neutrino-gateway") not in names
    assert by_name(objects, "Deployment", "neutrino-gateway")["spec"]["replicas"] == 1
    assert by_name(objects, "ConfigMap", "neutrino-gateway")["data"]["NEUTRINO_SYNC_UPSTREAM"] == ""
    assert by_name(objects, "ConfigMap", "neutrino-config")["data"]["NEUTRINO_DATA_DIR"] == "/data"
    assert by_name(objects, "StatefulSet", "nats")["spec"]["replicas"] == 1
    assert "cluster {" not in by_name(objects, "ConfigMap", "nats-config")["data"]["nats.conf"]
    by_name(objects, "PersistentVolumeClaim", "neutrino-data")
    containers = neutrino_containers(objects)
    # gateway, migration, autoscaler, scheduler, and the pools async, gpu, train and big_mem
    assert len(containers) == 8
    for obj, container in containers:
        assert "DATABASE_URL" not in {e["name"] for e in container["env"]}, obj["metadata"]["name"]
        assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"], obj["metadata"]["name"]
        volumes = obj["spec"]["template"]["spec"]["volumes"]
        assert {"name": "data", "persistentVolumeClaim": {"claimName": "neutrino-data"}} in volumes


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_the_scheduler_runs_with_the_gateway_nats_user(overlay):
    deployment = by_name(rendered(overlay), "Deployment", "neutrino-scheduler")
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["args"] == ["scheduler"]
    env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in container["env"]}
    assert env["NEUTRINO_NATS_URL"] == {"name": "neutrino-nats", "key": "gateway-url"}
    assert build_parser().parse_args(container["args"]).command == "scheduler"


def test_production_spreads_nats_over_nodes():
    objects = rendered("production")
    affinity = by_name(objects, "StatefulSet", "nats")["spec"]["template"]["spec"]["affinity"]
    term = affinity["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    for name in ("neutrino-gateway", "neutrino-fast"):
        assert by_name(objects, "Deployment", name)["spec"]["template"]["spec"]["topologySpreadConstraints"]


def test_image_and_namespace_options():
    objects = render(overlay="base", pools=[gpu_pool(), memory_pool()], namespace="ml", image="reg.io/n:2")
    images = {c["image"] for _, c in neutrino_containers(objects)}
    assert images == {"reg.io/n:2", "registry.example.com/neutrino-cuda:12.4"}  # a pool's own image stays
    assert {o["metadata"]["namespace"] for o in objects} == {"ml"}
    # A new image is a new migration Job (a Job's pod template cannot change in place).
    jobs = {o["metadata"]["name"] for o in [*objects, *render(overlay="base", pools=None)] if o["kind"] == "Job"}
    assert len(jobs) == 2


def test_keda_scaled_objects_name_real_deployments_and_consumers():
    objects = rendered("base")
    deployments = {o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"}
    keda = K8S_DIR / "extras" / "keda"
    kustomization = yaml.safe_load((keda / "kustomization.yaml").read_text())
    for file in kustomization["resources"]:
        scaled = yaml.safe_load((keda / file).read_text())
        assert scaled["apiVersion"] == "keda.sh/v1alpha1" and scaled["kind"] == "ScaledObject"
        target = scaled["spec"]["scaleTargetRef"]["name"]
        assert target in deployments
        trigger = scaled["spec"]["triggers"][0]
        assert trigger["type"] == "nats-jetstream"
        pool = scaled["metadata"]["labels"]["neutrino.dev/pool"]
        assert target == deployment_name(pool)
        assert trigger["metadata"]["stream"] == STREAM
        assert trigger["metadata"]["consumer"] == consumer_name(pool)
        # One trigger per priority level's consumer: a backlog of high or low tasks scales the pool too.
        assert [t["metadata"]["consumer"] for t in scaled["spec"]["triggers"]] == [
            consumer_name(pool, level) for level in ("normal", "high", "low")]
    assert not any("extras" in str(path) for path in OVERLAYS.values())  # an alternative, in no overlay


def ingress_backends(ingress: dict) -> list[tuple[str, str, str, str | int]]:
    """(host, path, Service, port) of every rule."""
    return [(rule["host"], p["path"], p["backend"]["service"]["name"],
             p["backend"]["service"]["port"].get("name") or p["backend"]["service"]["port"]["number"])
            for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_only_a_tls_ingress_publishes_the_gateway(overlay):
    objects = rendered(overlay)
    services = [o for o in objects if o["kind"] == "Service"]
    assert all(s["spec"].get("type", "ClusterIP") == "ClusterIP" for s in services), "no LoadBalancer, no NodePort"
    ingresses = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Ingress"}
    assert sorted(ingresses) == ["neutrino-gateway", "neutrino-gateway-ws"]
    host = "neutrino.example.com"
    for ingress in ingresses.values():
        assert ingress["spec"]["tls"] == [{"hosts": [host], "secretName": "neutrino-tls"}]
        notes = ingress["metadata"]["annotations"]
        assert notes["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true"
        for timeout in ("proxy-connect-timeout", "proxy-send-timeout", "proxy-read-timeout"):
            assert int(notes[f"nginx.ingress.kubernetes.io/{timeout}"]) > 0
        assert notes["nginx.ingress.kubernetes.io/proxy-body-size"]
    main_ingress = ingresses["neutrino-gateway"]
    # The whole body is read at the edge before the gateway sees it, and refused there over 2 MB.
    assert main_ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "on"
    assert main_ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "2m"
    backends = [*ingress_backends(main_ingress), *ingress_backends(ingresses["neutrino-gateway-ws"])]
    assert backends == [
        (host, "/", "neutrino-gateway", "http"),
        (host, "/metrics", "neutrino-not-published", 80),
        (host, "/ws/", "neutrino-gateway", "ws"),  # the websocket port under /ws/ only
    ]
    assert [p["pathType"] for r in main_ingress["spec"]["rules"] for p in r["http"]["paths"]] == ["Prefix", "Exact"]
    unpublished = by_name(objects, "Service", "neutrino-not-published")["spec"]
    assert "selector" not in unpublished  # no endpoints: /metrics answers 503 at the edge
    gateway = by_name(objects, "Service", "neutrino-gateway")["spec"]
    assert {p["name"]: p["targetPort"] for p in gateway["ports"]} == {"http": "http", "ws": "ws"}
    if overlay != "single-node":
        assert [p["name"] for p in by_name(objects, "Service", "neutrino-fast")["spec"]["ports"]] == ["http"]
    gateway_config = by_name(objects, "ConfigMap", "neutrino-gateway")["data"]
    assert gateway_config["NEUTRINO_TLS"] == "1"
    assert gateway_config["NEUTRINO_WS_URL"] == f"wss://{host}/ws/dashboard/"
    hosts = by_name(objects, "ConfigMap", "neutrino-config")["data"]["DJANGO_ALLOWED_HOSTS"].split(",")
    assert "*" not in hosts and {host, "localhost"} <= set(hosts)
    if overlay != "single-node":
        assert "neutrino-fast" in hosts  # the gateway's sync calls: http://neutrino-fast:8000
    for obj, container in neutrino_containers(objects):
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe in container:
                headers = {h["name"]: h["value"] for h in container[probe]["httpGet"].get("httpHeaders", [])}
                assert headers.get("Host") in hosts, f"{obj['metadata']['name']} {probe}"


def test_http_servers_and_nats_monitoring_are_reachable_inside_the_cluster_only():
    objects = rendered("base")
    policies = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "NetworkPolicy"}
    http = policies["neutrino-http"]
    assert http["policyTypes"] == ["Ingress"]
    selected = {e["key"]: e["values"] for e in http["podSelector"]["matchExpressions"]}
    assert selected == {"app.kubernetes.io/name": ["neutrino"], "app.kubernetes.io/component": ["gateway", "fast"]}
    # From pods of the cluster (the ingress controller, the gateway, Prometheus), never an address block.
    assert http["ingress"] == [{"from": [{"namespaceSelector": {}}], "ports": [{"port": 8000}, {"port": 8001}]}]
    nats = policies["nats"]
    assert not any("ipBlock" in peer for rule in nats["ingress"] for peer in rule["from"])
    by_port = {port["port"]: rule["from"] for rule in nats["ingress"] for port in rule["ports"]}
    neutrino_pods = [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "neutrino"}}}]
    assert by_port[4222] == by_port[6222] == neutrino_pods
    assert by_port[8222] == by_port[7777] == [{"namespaceSelector": {}}]
    for name in ("nats", "nats-headless", "nats-metrics"):
        assert by_name(objects, "Service", name)["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_the_gateway_settings_of_the_manifests_pass_check_deploy(tmp_path):
    """`manage.py check --deploy` with the environment the gateway pods get (the Secret's key made up)."""
    objects = rendered("production")
    env = {**os.environ, **by_name(objects, "ConfigMap", "neutrino-config")["data"],
           **by_name(objects, "ConfigMap", "neutrino-gateway")["data"],
           "DJANGO_SETTINGS_MODULE": "neutrino_site.settings", "NEUTRINO_DATA_DIR": str(tmp_path),
           "DJANGO_SECRET_KEY": "k8s-" + "s3cr3t-Vq9xT2mB7nR4wY8zL1cK6hJ0fD5gP3aE" * 2, "PYTHONPATH": str(ROOT)}
    env.pop("DATABASE_URL", None)
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "DEBUG"], env=env,
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


@pytest.mark.django_db
def test_the_host_option_names_the_published_host_everywhere(default_pools, capsys):
    assert main(["k8s", "render", "--overlay", "single-node", "--host", "tasks.acme.io"]) == 0
    objects = list(yaml.safe_load_all(capsys.readouterr().out))
    assert "neutrino.example.com" not in json.dumps(objects)
    for name in ("neutrino-gateway", "neutrino-gateway-ws"):
        ingress = by_name(objects, "Ingress", name)
        assert ingress["spec"]["tls"][0]["hosts"] == ["tasks.acme.io"]
        assert {host for host, *_ in ingress_backends(ingress)} == {"tasks.acme.io"}
    assert by_name(objects, "ConfigMap", "neutrino-gateway")["data"]["NEUTRINO_WS_URL"] == (
        "wss://tasks.acme.io/ws/dashboard/")
    hosts = by_name(objects, "ConfigMap", "neutrino-config")["data"]["DJANGO_ALLOWED_HOSTS"].split(",")
    assert hosts[0] == "tasks.acme.io"
    for bad in ("*", "Tasks.Acme.IO", "localhost", "a b.io", "x.io,evil.io"):
        assert main(["k8s", "render", "--host", bad]) == 2
        assert "is not a DNS host name" in capsys.readouterr().err
