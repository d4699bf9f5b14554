"""Neutrino's Kubernetes objects: the kustomize manifests in `k8s/` plus one Deployment per NATS pool.

One source of truth for pool workers: the `Pool` rows. `k8s/base/deployment-async.yaml` and
`deployment-gpu.yaml` are this module's rendering of the pools the migrations create (a test keeps
them equal), so `kubectl apply -k k8s/base` works without a database; `neutrino k8s render` and
`neutrino up` drop every such snapshot (label `app.kubernetes.io/component: pool-worker`) and put
one Deployment per NATS pool of the database in its place, before the overlay's patches apply.
Real kustomize (`kubectl kustomize`, see kubectl.py) builds the overlay from a copy of `k8s/` that
staging.py prepares.
The fast pool (mode http) is not rendered from its row: it is the static `neutrino-fast` Deployment
with its Service and CPU HPA.

`pool_deployment()` is what the autoscaler scales (`deployment_name()` gives its name).
Imports Django only in `database_pools()`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import yaml

from pools_app.k8s.kubectl import Obj, kustomize_build
from pools_app.k8s.nats_secret import NATS_SECRET_NAME, URL_KEYS
from pools_app.k8s.staging import copy_manifests, image_override, replace_objects, write_top_kustomization
from pools_app.models import Pool, PoolMode
from workers.engine.nats_auth import WORKER_USER

K8S_DIR = Path(__file__).resolve().parents[2] / "k8s"
OVERLAYS = {
    "base": K8S_DIR / "base",
    "single-node": K8S_DIR / "overlays" / "single-node",
    "production": K8S_DIR / "overlays" / "production",
}
# The image every manifest names; `--image` / NEUTRINO_IMAGE replace exactly this string.
MANIFEST_IMAGE = "neutrino:0.1.0"
# The host name the manifests publish (Ingress rules and certificate, DJANGO_ALLOWED_HOSTS,
# NEUTRINO_WS_URL); `--host` replaces exactly this string.
MANIFEST_HOST = "neutrino.example.com"
_HOST_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)+")
POOL_COMPONENT = "pool-worker"
# Every Neutrino container has this name, so one overlay patch reaches them all.
CONTAINER_NAME = "neutrino"
POOL_LABEL = "neutrino.dev/pool"
SECRET_NAME = "neutrino-secrets"
CONFIG_NAME = "neutrino-config"
# NEUTRINO_WORKER_GRACE_S in neutrino-config; Kubernetes waits a little longer before SIGKILL.
WORKER_GRACE_S = 30
TERMINATION_GRACE_S = WORKER_GRACE_S + 15
RUN_AS = 10001
MAX_LABEL_VALUE = 63

# Order of `neutrino up`: what others refer to first, workloads last.
APPLY_ORDER = [
    "Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Secret", "PersistentVolumeClaim",
    "Service", "NetworkPolicy", "PodDisruptionBudget", "StatefulSet", "Job", "Deployment",
    "HorizontalPodAutoscaler", "Ingress",
]


class RenderError(Exception):
    """The pools or the overlay cannot be rendered; the message says which and why."""


class PoolShape(Protocol):
    """What rendering reads of a pool: a `pools_app.models.Pool` has all of it."""

    name: str
    kind: str
    enabled: bool
    concurrency: int
    min_replicas: int
    max_replicas: int
    image: str
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    gpu_count: int
    gpu_resource: str
    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]


def deployment_name(pool_name: str) -> str:
    """`neutrino-pool-<name>`, lower-cased with `_` as `-` (Kubernetes names are DNS labels)."""
    return "neutrino-pool-" + pool_name.lower().replace("_", "-")


def pool_labels(pool_name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "neutrino",
        "app.kubernetes.io/part-of": "neutrino",
        "app.kubernetes.io/component": POOL_COMPONENT,
        POOL_LABEL: pool_name,
    }


def worker_args(pool: PoolShape) -> list[str]:
    # No --nats-url: the URL holds the worker user's password, so it comes from the Secret through
    # NEUTRINO_NATS_URL, never from the command line (which `ps` and the pod spec show).
    return ["serve", "--mode", "nats", "--pool", pool.name, "--concurrency", str(pool.concurrency)]


def neutrino_env(nats_user: str) -> list[Obj]:
    """The environment of a Neutrino container: the Secret the user creates, and NEUTRINO_NATS_URL as
    `nats_user` from the Secret `neutrino up` creates (nats_secret.py)."""
    return [
        {"name": "DJANGO_SECRET_KEY",
         "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": "DJANGO_SECRET_KEY"}}},
        {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": "DATABASE_URL"}}},
        {"name": "NEUTRINO_NATS_URL",
         "valueFrom": {"secretKeyRef": {"name": NATS_SECRET_NAME, "key": URL_KEYS[nats_user]}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]


def pod_security_context() -> Obj:
    return {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_security_context() -> Obj:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def pool_resources(pool: PoolShape) -> Obj:
    requests = {k: v for k, v in (("cpu", pool.cpu_request), ("memory", pool.memory_request)) if v}
    limits: dict[str, Any] = {k: v for k, v in (("cpu", pool.cpu_limit), ("memory", pool.memory_limit)) if v}
    if pool.gpu_count > 0:
        limits[pool.gpu_resource or "nvidia.com/gpu"] = pool.gpu_count
    resources: Obj = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return resources


def pool_deployment(pool: PoolShape, *, image: str = MANIFEST_IMAGE) -> Obj:
    """The Deployment of one NATS pool's workers; `replicas` is min_replicas (0 when the pool is disabled)."""
    if len(pool.name) > MAX_LABEL_VALUE:
        raise RenderError(f"pool {pool.name!r}: Kubernetes label values hold at most {MAX_LABEL_VALUE} characters")
    labels = pool_labels(pool.name)
    selector = {"app.kubernetes.io/name": "neutrino", POOL_LABEL: pool.name}
    pod: Obj = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
        "securityContext": pod_security_context(),
    }
    if pool.node_selector:
        pod["nodeSelector"] = dict(pool.node_selector)
    if pool.tolerations:
        pod["tolerations"] = copy.deepcopy(list(pool.tolerations))
    pod["containers"] = [{
        "name": CONTAINER_NAME,
        "image": pool.image or image,
        "imagePullPolicy": "IfNotPresent",
        "args": worker_args(pool),
        "envFrom": [{"configMapRef": {"name": CONFIG_NAME}}],
        "env": neutrino_env(WORKER_USER),
        "resources": pool_resources(pool),
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }]
    pod["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    spec: Obj = {
        "replicas": pool.min_replicas if pool.enabled else 0,
        "revisionHistoryLimit": 3,
        "selector": {"matchLabels": selector},
    }
    if pool.gpu_count > 0:
        # Never ask for one GPU more than the pool has during a rollout.
        spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    spec["template"] = {"metadata": {"labels": dict(labels)}, "spec": pod}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(pool.name),
            "labels": labels,
            "annotations": {
                "neutrino.dev/pool-kind": pool.kind,
                "neutrino.dev/min-replicas": str(pool.min_replicas),
                "neutrino.dev/max-replicas": str(pool.max_replicas),
            },
        },
        "spec": spec,
    }


def pool_deployments(pools: Iterable[PoolShape], *, image: str = MANIFEST_IMAGE) -> list[Obj]:
    rendered: dict[str, str] = {}
    objects = []
    for pool in pools:
        name = deployment_name(pool.name)
        if name in rendered:
            raise RenderError(f"pools {rendered[name]!r} and {pool.name!r} would both be Deployment {name!r}; "
                              "rename one")
        rendered[name] = pool.name
        objects.append(pool_deployment(pool, image=image))
    return objects


def is_pool_deployment(obj: Obj) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return obj.get("kind") == "Deployment" and labels.get("app.kubernetes.io/component") == POOL_COMPONENT


def render(*, overlay: str = "base", pools: Sequence[PoolShape] | None, namespace: str | None = None,
           image: str | None = None, host: str | None = None) -> list[Obj]:
    """Build the overlay, pool Deployments from `pools` in place of the snapshots (None: keep them).

    Then: the namespace (when given), the image (when given, in place of MANIFEST_IMAGE), the public
    host name (when given, in place of MANIFEST_HOST), Jobs named
    after their pod template (a Job's template cannot change, so a changed one is a new Job), and the
    objects ordered for applying. Raises KustomizeError when kubectl is missing or kustomize fails.
    """
    if overlay not in OVERLAYS:
        raise RenderError(f"unknown overlay {overlay!r}; choose one of {', '.join(OVERLAYS)}")
    if host is not None and (len(host) > 253 or not _HOST_NAME.fullmatch(host)):
        raise RenderError(f"--host {host!r} is not a DNS host name (lower case, with a dot: tasks.example.com)")
    with tempfile.TemporaryDirectory(prefix="neutrino-k8s-") as tmp:
        tree = copy_manifests(K8S_DIR, Path(tmp))
        overlay_dir = tree / OVERLAYS[overlay].relative_to(K8S_DIR)
        if pools is not None:
            placed = replace_objects(overlay_dir, pool_deployments(pools), is_pool_deployment)
            if pools and not placed:
                raise RenderError(f"overlay {overlay!r} has no pool Deployment to replace with the database's pools")
        top = write_top_kustomization(Path(tmp) / "render", overlay_dir, namespace=namespace,
                                      images=[image_override(MANIFEST_IMAGE, image)] if image else [])
        objects = kustomize_build(top)
    if host is not None:
        # The placeholder is only ever a host name (Ingress rules and TLS hosts, DJANGO_ALLOWED_HOSTS,
        # NEUTRINO_WS_URL), and a DNS name needs no JSON escaping.
        objects = json.loads(json.dumps(objects).replace(MANIFEST_HOST, host))
    objects = [_job_named_by_template(obj) for obj in objects]
    return sorted(objects, key=_apply_rank)


def database_pools() -> list[PoolShape]:
    """The NATS pools of the database, enabled or not (a disabled pool renders with 0 replicas)."""
    return list(Pool.objects.filter(mode=PoolMode.NATS).order_by("name"))


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (nats.conf) as `|` blocks, so the printed YAML reads like the files."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and not any(c in value for c in "\t\r") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def to_yaml(objects: Sequence[Obj]) -> str:
    """The objects as one YAML stream, each document starting with `---`."""
    return "".join(
        "---\n" + yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False) for obj in objects)


def describe(obj: Obj) -> str:
    meta = obj.get("metadata", {})
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')} {where}{meta.get('name')}"


def _job_named_by_template(obj: Obj) -> Obj:
    if obj.get("kind") != "Job":
        return obj
    obj = copy.deepcopy(obj)
    template = json.dumps(obj["spec"]["template"], sort_keys=True).encode()
    base = re.sub(r"-[0-9a-f]{8}$", "", obj["metadata"]["name"])
    obj["metadata"]["name"] = f"{base}-{hashlib.sha256(template).hexdigest()[:8]}"
    return obj


def _apply_rank(obj: Obj) -> int:
    kind = obj.get("kind", "")
    return APPLY_ORDER.index(kind) if kind in APPLY_ORDER else len(APPLY_ORDER)


SNAPSHOT_FILES = {"async": K8S_DIR / "base" / "deployment-async.yaml", "gpu": K8S_DIR / "base" / "deployment-gpu.yaml"}
SNAPSHOT_HEADER = (
    "# Generated by `python -m pools_app.k8s.render` from the default {name!r} pool of the migrations.\n"
    "# `neutrino up` renders one such Deployment per NATS pool of the database in place of this file.\n"
)


def snapshot_text(pool: PoolShape) -> str:
    return SNAPSHOT_HEADER.format(name=pool.name) + yaml.safe_dump(
        pool_deployment(pool), sort_keys=False, default_flow_style=False)


def default_pools() -> list[PoolShape]:
    """The pools the migrations create, as unsaved rows."""
    import importlib


    migration = importlib.import_module("pools_app.migrations.0002_default_pools")
    return [Pool(**fields) for fields in migration.DEFAULT_POOLS if fields.get("mode", "nats") == "nats"]


if __name__ == "__main__":
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "neutrino_site.settings")
    django.setup()
    for default_pool in default_pools():
        SNAPSHOT_FILES[default_pool.name].write_text(snapshot_text(default_pool))
        print(f"wrote {SNAPSHOT_FILES[default_pool.name]}")
