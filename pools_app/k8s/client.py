"""A small Kubernetes client over the `kubernetes` package: server-side apply, reads and the scale subresource.

Only raw REST calls (`ApiClient.param_serialize` + `call_api`), with objects as plain dicts, so one
client serves every kind Neutrino applies and the autoscaler can read and scale Deployments with it.
Configuration: an explicit API URL (`kube_url`; tests give a fake API server's), else the in-cluster
service account, else the kubeconfig (its current context, or `context`).

Every failure is a `KubeError` that names the object, the HTTP status and the API server's message,
with a hint for the usual causes (missing namespace, RBAC, an invalid or immutable field).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]
FIELD_MANAGER = "neutrino"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"

PLURALS = {
    "ConfigMap": "configmaps", "Secret": "secrets", "Service": "services", "ServiceAccount": "serviceaccounts",
    "PersistentVolumeClaim": "persistentvolumeclaims", "Deployment": "deployments",
    "StatefulSet": "statefulsets", "Job": "jobs", "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "PodDisruptionBudget": "poddisruptionbudgets", "Role": "roles", "RoleBinding": "rolebindings",
    "NetworkPolicy": "networkpolicies", "Ingress": "ingresses", "ScaledObject": "scaledobjects",
}


class KubeError(Exception):
    """The API server refused a call (or could not be reached: status 0)."""

    def __init__(self, *, status: int, reason: str, message: str, target: str) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.target = target
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.status == 0:
            return f"{self.target}: {self.message}"
        text = f"{self.target}: {self.status} {self.reason}: {self.message}"
        hint = self.hint()
        return f"{text}\n  hint: {hint}" if hint else text

    def hint(self) -> str:
        lowered = self.message.lower()
        if self.status == 404 and "namespaces" in lowered:
            return "create the namespace first (kubectl create namespace NAME) or pass --namespace"
        if self.status in {401, 403}:
            return "the credentials in use may not do this; check the kubeconfig context and its RBAC"
        if self.status == 422 and "immutable" in lowered:
            return "this field cannot change in place; delete the object and run `neutrino up` again"
        if self.status == 422:
            return "the object is invalid for this cluster; fix the pool or manifest named above"
        if self.status == 409:
            return "another field manager owns these fields; `neutrino up` applies with force, so retry"
        return ""


class KubeUnreachable(KubeError):
    pass


def api_client(*, kube_url: str = "", context: str | None = None) -> Any:
    """A `kubernetes.client.ApiClient`: `kube_url` if given, else in-cluster, else the kubeconfig."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    if kube_url:
        configuration.host = kube_url.rstrip("/")
        return client.ApiClient(configuration)
    if context is None:
        try:
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        except ConfigException:
            pass
    try:
        config.load_kube_config(context=context, client_configuration=configuration)
    except (ConfigException, OSError) as exc:
        raise KubeUnreachable(status=0, reason="", target="Kubernetes configuration",
                              message=f"no cluster to talk to: not in a pod, and the kubeconfig failed ({exc})")
    return client.ApiClient(configuration)


def object_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    if kind not in PLURALS:
        raise ValueError(f"Neutrino's client does not know the kind {kind!r}")
    prefix = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{prefix}/namespaces/{namespace}/{PLURALS[kind]}"
    return f"{path}/{name}" if name else path


@dataclass
class KubeClient:
    api: Any  # kubernetes.client.ApiClient
    timeout_s: float = 15.0
    field_manager: str = FIELD_MANAGER

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)

    def apply(self, obj: Obj, *, force: bool = True) -> Obj:
        """Server-side apply of one namespaced object; returns the object as stored."""
        meta = obj["metadata"]
        path = object_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        query = [("fieldManager", self.field_manager), ("force", "true" if force else "false")]
        return self._call("PATCH", path, _target(obj), query=query, body=obj, content_type=APPLY_CONTENT_TYPE)

    def create(self, obj: Obj) -> Obj:
        """Create one namespaced object; a KubeError with status 409 when it exists already."""
        meta = obj["metadata"]
        path = object_path(obj["apiVersion"], obj["kind"], meta["namespace"])
        return self._call("POST", path, _target(obj), query=[("fieldManager", self.field_manager)], body=obj,
                          content_type="application/json")

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        """The object, or None when it does not exist."""
        try:
            return self._call("GET", object_path(api_version, kind, namespace, name), f"{kind} {namespace}/{name}")
        except KubeError as exc:
            if exc.status == 404 and "namespaces" not in exc.message:
                return None
            raise

    def list_objects(self, api_version: str, kind: str, namespace: str, *, label_selector: str = "") -> list[Obj]:
        query = [("labelSelector", label_selector)] if label_selector else []
        answer = self._call("GET", object_path(api_version, kind, namespace), f"{kind} list in {namespace}",
                            query=query)
        return list(answer.get("items", []))

    def get_scale(self, namespace: str, name: str, *, kind: str = "Deployment") -> Obj:
        path = object_path("apps/v1", kind, namespace, name) + "/scale"
        return self._call("GET", path, f"{kind} {namespace}/{name} scale")

    def patch_scale(self, namespace: str, name: str, replicas: int, *, kind: str = "Deployment") -> Obj:
        """Set the replicas through the scale subresource (what `kubectl scale` does)."""
        path = object_path("apps/v1", kind, namespace, name) + "/scale"
        return self._call("PATCH", path, f"{kind} {namespace}/{name} scale", body={"spec": {"replicas": replicas}},
                          content_type="application/merge-patch+json")

    def close(self) -> None:
        self.api.close()

    def _call(self, method: str, path: str, target: str, *, query: list[tuple[str, str]] | None = None,
              body: Any = None, content_type: str | None = None) -> Obj:
        import urllib3

        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        request = self.api.param_serialize(method, path, query_params=query or [], header_params=headers,
                                           body=body, auth_settings=["BearerToken"])
        try:
            response = self.api.call_api(*request, _request_timeout=self.timeout_s)
            response.read()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeUnreachable(status=0, reason="", target=target,
                                  message=f"cannot reach the Kubernetes API at {self.host} ({_cause(exc)})")
        data = response.data or b""
        try:
            answer = json.loads(data) if data else {}
        except ValueError:
            answer = {"message": data[:500].decode("utf-8", "replace")}
        if not 200 <= response.status <= 299:
            raise KubeError(status=response.status, reason=str(answer.get("reason") or response.reason or ""),
                            message=str(answer.get("message") or "(no message)"), target=target)
        return answer if isinstance(answer, dict) else {"value": answer}


def _target(obj: Obj) -> str:
    meta = obj.get("metadata", {})
    return f"{obj.get('kind')} {meta.get('namespace')}/{meta.get('name')}"


def _cause(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc)
