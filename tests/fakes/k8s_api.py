"""A fake Kubernetes API server for tests: a small real HTTP server, objects kept in memory.

It is a fake, not a cluster: no scheduler, no controllers, no admission, no validation beyond the
URL matching the object. It implements only what Neutrino's `neutrino up` and its autoscaler call:

- server-side apply: `PATCH` with `Content-Type: application/apply-patch+yaml` on a namespaced
  object (`/api/v1/namespaces/N/<plural>/<name>` or `/apis/<group>/<version>/namespaces/N/...`),
  needing `fieldManager`; the applied object replaces the stored one's metadata labels/annotations
  and spec (one field manager, so "replace" is what apply amounts to); `status` is kept;
- `POST` of a new object to its namespaced collection (409 AlreadyExists when it exists; a Secret's
  `stringData` is stored base64-encoded in `data`, as the API server does);
- `GET` of one object and of a namespaced collection (`?labelSelector=a=b,c=d`);
- `GET`, `PATCH` (merge, strategic-merge or JSON patch) and `PUT` of `deployments/<name>/scale`
  (and statefulsets), as `autoscaling/v1` `Scale` objects;
- rollouts "complete" at once, or after `rollout_polls` reads: Deployments and StatefulSets get
  `status.readyReplicas = updatedReplicas = availableReplicas = spec.replicas` and
  `observedGeneration = metadata.generation`; Jobs get `status.succeeded = 1`.

Answers are Kubernetes `Status` objects on errors: 404 for an unknown namespace or object (namespaces
must be declared: `FakeKubeAPI(namespaces={"neutrino"})`), 415 for an apply without the apply content
type, 422 for an object whose kind or name does not match the URL, and any error a test injects with
`fail(kind, name, code=..., message=...)`. Every request is recorded in `requests`.

Use it as a context manager (or `start()` / `stop()`); `url` is `http://127.0.0.1:<free port>`, to be
the `host` of a `kubernetes.client.Configuration`.
"""

from __future__ import annotations

import base64
import copy
import json
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

Obj = dict[str, Any]

# The kinds the fake knows: plural -> (kind, apiVersion prefix check is loose on purpose).
KINDS: dict[str, str] = {
    "configmaps": "ConfigMap",
    "secrets": "Secret",
    "services": "Service",
    "serviceaccounts": "ServiceAccount",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "deployments": "Deployment",
    "statefulsets": "StatefulSet",
    "jobs": "Job",
    "horizontalpodautoscalers": "HorizontalPodAutoscaler",
    "poddisruptionbudgets": "PodDisruptionBudget",
    "roles": "Role",
    "rolebindings": "RoleBinding",
    "networkpolicies": "NetworkPolicy",
    "ingresses": "Ingress",
    "scaledobjects": "ScaledObject",
}
SCALABLE = {"deployments", "statefulsets"}
ROLLED_OUT = {"deployments", "statefulsets", "jobs"}


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str
    body: Any


@dataclass
class _Stored:
    obj: Obj
    reads_until_ready: int = 0


@dataclass
class FakeKubeAPI:
    namespaces: set[str] = field(default_factory=lambda: {"default", "neutrino"})
    # Reads of an object's status before its rollout is complete (0: complete at once).
    rollout_polls: int = 0
    # False: rollouts never complete (to test timeouts).
    complete_rollouts: bool = True

    def __post_init__(self) -> None:
        self.requests: list[Recorded] = []
        self._objects: dict[tuple[str, str, str], _Stored] = {}
        self._failures: dict[tuple[str, str], tuple[int, str]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._resource_version = 0

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeKubeAPI:
        fake = self

        class Handler(_Handler):
            api = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-kube-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeKubeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- for tests ---------------------------------------------------------------------------

    def fail(self, kind: str, name: str, *, code: int = 422, message: str = "") -> None:
        """Answer every write to this object with this error (a Kubernetes Status)."""
        self._failures[(kind, name)] = (code, message or f"{kind} {name!r} is invalid")

    def objects(self, kind: str | None = None, namespace: str | None = None) -> list[Obj]:
        with self._lock:
            return [
                copy.deepcopy(s.obj) for (plural, ns, _), s in sorted(self._objects.items())
                if (kind is None or KINDS[plural] == kind) and (namespace is None or ns == namespace)
            ]

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        plural = _plural(kind)
        with self._lock:
            stored = self._objects.get((plural, namespace, name))
            return copy.deepcopy(stored.obj) if stored else None

    def put(self, obj: Obj) -> None:
        """Store an object as if someone else had created it (the autoscaler's tests use it)."""
        ns = obj["metadata"].get("namespace", "default")
        self._store(_plural(obj["kind"]), ns, obj["metadata"]["name"], copy.deepcopy(obj))

    def complete_rollout(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            stored = self._objects[(_plural(kind), namespace, name)]
            stored.reads_until_ready = 0
            _mark_ready(_plural(kind), stored.obj)

    def writes(self) -> list[Recorded]:
        return [r for r in self.requests if r.method in {"POST", "PUT", "PATCH", "DELETE"}]

    # --- the server's side -------------------------------------------------------------------

    def _next_version(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    def _store(self, plural: str, namespace: str, name: str, obj: Obj) -> Obj:
        """Create or replace an object's labels, annotations and spec (or data); keep its status."""
        with self._lock:
            key = (plural, namespace, name)
            stored = self._objects.get(key)
            meta = obj.setdefault("metadata", {})
            meta["namespace"] = namespace
            if stored is None:
                meta.update(
                    uid=str(uuid.uuid4()),
                    creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    generation=1,
                )
                obj.pop("status", None)
                stored = _Stored(obj=obj)
                self._objects[key] = stored
                changed = True
            else:
                old = stored.obj
                changed = old.get("spec") != obj.get("spec")
                for keep in ("uid", "creationTimestamp", "generation"):
                    meta[keep] = old["metadata"][keep]
                if changed:
                    meta["generation"] += 1
                obj["status"] = old.get("status", {})
                stored.obj = obj
            meta["resourceVersion"] = self._next_version()
            if plural in ROLLED_OUT and changed:
                stored.reads_until_ready = self.rollout_polls
                _mark_progressing(plural, stored.obj)
                if self.complete_rollouts and self.rollout_polls == 0:
                    _mark_ready(plural, stored.obj)
            return copy.deepcopy(stored.obj)

    def _read(self, plural: str, namespace: str, name: str) -> Obj | None:
        with self._lock:
            stored = self._objects.get((plural, namespace, name))
            if stored is None:
                return None
            if plural in ROLLED_OUT and stored.reads_until_ready > 0:
                stored.reads_until_ready -= 1
                if stored.reads_until_ready == 0 and self.complete_rollouts:
                    _mark_ready(plural, stored.obj)
            return copy.deepcopy(stored.obj)


def _plural(kind: str) -> str:
    for plural, known in KINDS.items():
        if known == kind:
            return plural
    raise KeyError(f"the fake does not know kind {kind!r}")


def _replicas(obj: Obj) -> int:
    return int(obj.get("spec", {}).get("replicas", 1))


def _mark_progressing(plural: str, obj: Obj) -> None:
    status = obj.setdefault("status", {})
    if plural == "jobs":
        status.pop("succeeded", None)
        status["active"] = 1
        return
    status["replicas"] = max(int(status.get("replicas", 0)), _replicas(obj))
    status["updatedReplicas"] = 0
    status.setdefault("readyReplicas", 0)
    status.setdefault("availableReplicas", 0)


def _mark_ready(plural: str, obj: Obj) -> None:
    status = obj.setdefault("status", {})
    if plural == "jobs":
        status.pop("active", None)
        status["succeeded"] = 1
        status["conditions"] = [{"type": "Complete", "status": "True"}]
        return
    replicas = _replicas(obj)
    status.update(
        observedGeneration=obj["metadata"]["generation"],
        replicas=replicas,
        updatedReplicas=replicas,
        readyReplicas=replicas,
        availableReplicas=replicas,
    )
    if plural == "statefulsets":
        status["currentReplicas"] = replicas


def status_body(code: int, reason: str, message: str, *, kind: str = "", name: str = "") -> Obj:
    body: Obj = {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    }
    if kind or name:
        body["details"] = {"name": name, "kind": kind}
    return body


REASONS = {400: "BadRequest", 404: "NotFound", 409: "Conflict", 415: "UnsupportedMediaType",
           422: "Invalid", 403: "Forbidden", 500: "InternalError"}


class _Handler(BaseHTTPRequestHandler):
    api: FakeKubeAPI
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle and delayed ACKs add 40 ms a call.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        split = urlsplit(self.path)
        query = parse_qs(split.query)
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        if raw:
            try:
                body = yaml.safe_load(raw) if content_type.endswith("yaml") else json.loads(raw)
            except (yaml.YAMLError, ValueError) as exc:
                self._send(400, status_body(400, "BadRequest", f"cannot decode the body: {exc}"))
                return
        self.api.requests.append(Recorded(method, split.path, query, content_type, body))
        try:
            code, answer = self._route(method, split.path, query, content_type, body)
        except Exception as exc:  # a bug in the fake: say so loudly
            code, answer = 500, status_body(500, "InternalError", f"fake API server error: {exc!r}")
        self._send(code, answer)

    def _send(self, code: int, body: Obj) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str, path: str, query: dict[str, list[str]], content_type: str,
               body: Any) -> tuple[int, Obj]:
        parts = [p for p in path.split("/") if p]
        if path == "/version":
            return 200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0-fake"}
        # /api/v1/namespaces/N/plural[/name[/sub]]  or  /apis/G/V/namespaces/N/plural[/name[/sub]]
        if parts[:1] == ["api"] and len(parts) >= 5:
            api_version, rest = parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 6:
            api_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            return 404, status_body(404, "NotFound", f"the server could not find the requested resource ({path})")
        if rest[0] != "namespaces" or len(rest) < 3 or rest[2] not in KINDS:
            return 404, status_body(404, "NotFound", f"the server could not find the requested resource ({path})")
        namespace, plural = rest[1], rest[2]
        name = rest[3] if len(rest) > 3 else None
        sub = rest[4] if len(rest) > 4 else None
        if namespace not in self.api.namespaces:
            return 404, status_body(404, "NotFound", f'namespaces "{namespace}" not found', kind="namespaces",
                                    name=namespace)
        if name is None:
            if method == "POST":
                return self._create(plural, namespace, api_version, body)
            if method != "GET":
                return 405, status_body(405, "MethodNotAllowed", "the fake only reads and creates in collections")
            return 200, self._list(plural, namespace, api_version, query)
        if sub == "scale":
            return self._scale(method, plural, namespace, name, content_type, body)
        if sub is not None:
            return 404, status_body(404, "NotFound", f"the fake has no subresource {sub!r}")
        if method == "GET":
            found = self.api._read(plural, namespace, name)
            if found is None:
                return 404, status_body(404, "NotFound", f'{plural}.{_group(api_version)} "{name}" not found',
                                        kind=plural, name=name)
            return 200, found
        if method == "PATCH":
            return self._apply(plural, namespace, name, api_version, query, content_type, body)
        return 405, status_body(405, "MethodNotAllowed", f"the fake does not implement {method} on objects")

    def _list(self, plural: str, namespace: str, api_version: str, query: dict[str, list[str]]) -> Obj:
        wanted = _parse_selector(query.get("labelSelector", [""])[0])
        items = []
        for obj in self.api.objects(KINDS[plural], namespace):
            labels = obj["metadata"].get("labels") or {}
            if all(labels.get(k) == v for k, v in wanted.items()):
                items.append(obj)
        return {"kind": f"{KINDS[plural]}List", "apiVersion": api_version,
                "metadata": {"resourceVersion": str(self.api._resource_version)}, "items": items}

    def _apply(self, plural: str, namespace: str, name: str, api_version: str, query: dict[str, list[str]],
               content_type: str, body: Any) -> tuple[int, Obj]:
        kind = KINDS[plural]
        if content_type != "application/apply-patch+yaml":
            return 415, status_body(415, "UnsupportedMediaType",
                                    f"the fake only takes server-side apply on objects, not {content_type!r}")
        if not query.get("fieldManager"):
            return 422, status_body(422, "Invalid", "fieldManager is required for apply requests")
        if not isinstance(body, dict):
            return 400, status_body(400, "BadRequest", "the applied body is not an object")
        failure = self.api._failures.get((kind, name))
        if failure is not None:
            code, message = failure
            return code, status_body(code, REASONS.get(code, "Invalid"), message, kind=kind, name=name)
        meta = body.get("metadata") or {}
        if body.get("kind") != kind or body.get("apiVersion") != api_version or meta.get("name") != name:
            return 422, status_body(
                422, "Invalid",
                f"{kind} {name!r}: the body ({body.get('apiVersion')} {body.get('kind')} {meta.get('name')!r}) "
                "does not match the URL", kind=kind, name=name)
        if meta.get("namespace", namespace) != namespace:
            return 400, status_body(400, "BadRequest", "the namespace of the provided object does not match "
                                    "the namespace sent on the request", kind=kind, name=name)
        return 200, self.api._store(plural, namespace, name, copy.deepcopy(body))

    def _create(self, plural: str, namespace: str, api_version: str, body: Any) -> tuple[int, Obj]:
        kind = KINDS[plural]
        meta = body.get("metadata") if isinstance(body, dict) else None
        if not meta or not meta.get("name") or body.get("kind") != kind or body.get("apiVersion") != api_version:
            return 422, status_body(422, "Invalid", f"the created body is not a named {api_version} {kind}")
        name = meta["name"]
        failure = self.api._failures.get((kind, name))
        if failure is not None:
            code, message = failure
            return code, status_body(code, REASONS.get(code, "Invalid"), message, kind=kind, name=name)
        if meta.get("namespace", namespace) != namespace:
            return 400, status_body(400, "BadRequest", "the namespace of the provided object does not match "
                                    "the namespace sent on the request", kind=kind, name=name)
        if self.api._read(plural, namespace, name) is not None:
            return 409, status_body(409, "AlreadyExists", f'{plural} "{name}" already exists', kind=kind, name=name)
        obj = copy.deepcopy(body)
        if kind == "Secret" and "stringData" in obj:
            data = obj.setdefault("data", {})
            for key, value in obj.pop("stringData").items():
                data[key] = base64.b64encode(str(value).encode()).decode()
        return 201, self.api._store(plural, namespace, name, obj)

    def _scale(self, method: str, plural: str, namespace: str, name: str, content_type: str,
               body: Any) -> tuple[int, Obj]:
        if plural not in SCALABLE:
            return 404, status_body(404, "NotFound", f"{plural} have no scale subresource")
        current = self.api.get(KINDS[plural], namespace, name)
        if current is None:
            return 404, status_body(404, "NotFound", f'{plural}.apps "{name}" not found', kind=plural, name=name)
        if method in {"PATCH", "PUT"}:
            failure = self.api._failures.get((KINDS[plural], name))
            if failure is not None:
                code, message = failure
                return code, status_body(code, REASONS.get(code, "Invalid"), message, kind=KINDS[plural], name=name)
            replicas = _replicas_from_scale_body(method, content_type, body)
            if replicas is None or replicas < 0:
                return 422, status_body(422, "Invalid", f"cannot read spec.replicas from the {method} body",
                                        kind="Scale", name=name)
            current["spec"]["replicas"] = replicas
            current = self.api._store(plural, namespace, name, current)
        elif method != "GET":
            return 405, status_body(405, "MethodNotAllowed", f"{method} on scale")
        return 200, _scale_object(current)


def _group(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else ""


def _parse_selector(selector: str) -> dict[str, str]:
    wanted = {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, _, value = term.partition("=")
        wanted[key.strip()] = value.lstrip("=").strip()
    return wanted


def _replicas_from_scale_body(method: str, content_type: str, body: Any) -> int | None:
    if content_type == "application/json-patch+json" and isinstance(body, list):
        for op in body:
            if op.get("op") in {"replace", "add"} and op.get("path") == "/spec/replicas":
                return int(op["value"])
        return None
    if isinstance(body, dict):
        value = (body.get("spec") or {}).get("replicas")
        return int(value) if value is not None else None
    return None


def _scale_object(obj: Obj) -> Obj:
    labels = obj.get("spec", {}).get("selector", {}).get("matchLabels", {})
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: obj["metadata"][k] for k in ("name", "namespace", "uid", "resourceVersion",
                                                      "creationTimestamp")},
        "spec": {"replicas": _replicas(obj)},
        "status": {
            "replicas": int(obj.get("status", {}).get("replicas", 0)),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        },
    }
