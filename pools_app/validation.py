"""What makes a pool valid beyond each field's own type: one message per bad field, for forms and the admin.

`pool_errors(pool)` reads a `Pool` (saved or not) and returns {field: [messages]}; `Pool.clean()` raises
them as a `ValidationError`, so the dashboard's form and the Django admin show each next to its field.
`image_error(image, registries)` checks a pool's image against the allowed registries
(NEUTRINO_IMAGE_REGISTRIES), which the form (dashboard and admin) passes in. Imports no Django.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from workers.engine.topology import RESERVED_POOL_NAMES

HTTP_POOL = "fast"  # the one pool whose tasks run inside the HTTP servers
DEPLOYMENT_PREFIX = "neutrino-pool-"
MAX_NAME = 63 - len(DEPLOYMENT_PREFIX)  # the Deployment's name is a DNS label
# Bounds that keep one pool from asking a cluster (or a laptop's `neutrino dev`) for absurd amounts:
# a worker's concurrency is its number of child processes, replicas its number of pods or processes.
MAX_CONCURRENCY = 256
MAX_REPLICAS = 100
MAX_GPUS = 16  # per worker: more than any one node has
_IMAGE_BOUNDARY = "/:@"
_QUANTITY = re.compile(r"^\+?(\d+(\.\d*)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+)?$")
_SUFFIX = {
    "": Decimal(1), "m": Decimal("0.001"), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18, "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_RESOURCE_NAME = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_EFFECTS = {"", "NoSchedule", "PreferNoSchedule", "NoExecute"}


def quantity(text: str) -> Decimal | None:
    """A Kubernetes quantity ("500m", "2", "512Mi", "1e3") as a number, or None when it is not one."""
    match = _QUANTITY.match(text.strip())
    if match is None:
        return None
    suffix = match.group(3) or ""
    try:
        if suffix[:1] in {"e", "E"}:
            return Decimal(match.group(1)) * Decimal(10) ** int(suffix[1:])
        return Decimal(match.group(1)) * _SUFFIX[suffix]
    except (InvalidOperation, KeyError, ValueError):
        return None


def pool_errors(pool: Any) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}

    def add(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    name = str(pool.name or "")
    if name in RESERVED_POOL_NAMES:
        add("name", f"{name!r} is reserved for Neutrino's own NATS subjects; choose another name.")
    if len(name) > MAX_NAME:
        add("name", f"At most {MAX_NAME} characters: the Kubernetes Deployment is named {DEPLOYMENT_PREFIX}<name>.")
    if pool.mode == "http" and name != HTTP_POOL:
        add("mode", f"Only the {HTTP_POOL!r} pool runs in the HTTP servers (sync tasks); other pools are nats.")
    if name == HTTP_POOL and pool.mode != "http":
        add("mode", f"The {HTTP_POOL!r} pool runs sync tasks inside the HTTP servers: its mode must be http.")
    _check_scaling(pool, add)
    _check_resources(pool, add)
    _check_placement(pool, add)
    image = str(pool.image or "")
    if image and (image != image.strip() or any(ch.isspace() for ch in image)):
        add("image", "An image reference has no spaces, e.g. registry.example.com/neutrino:0.1.0.")
    return errors


def image_error(image: str, registries: Sequence[str]) -> str | None:
    """Why a pool may not run `image`, or None. Empty is the manifests' own image, always allowed.

    An image is allowed when it starts with one of `registries` at a boundary: the prefix ends with
    "/", ":" or "@", or the image goes on with one of them (or ends there). So "neutrino:" allows
    neutrino:0.1.0 but not neutrino-miner:1 or neutrino/miner:1, and "registry.example.com" allows
    registry.example.com/team/x:1 but not registry.example.com.evil.io/x.
    """
    if not image:
        return None
    for prefix in registries:
        if not prefix or not image.startswith(prefix):
            continue
        if prefix[-1] in _IMAGE_BOUNDARY or len(image) == len(prefix) or image[len(prefix)] in _IMAGE_BOUNDARY:
            return None
    return (f"{image!r} is not from an allowed registry ({', '.join(registries) or 'none'}); an operator "
            "allows others with NEUTRINO_IMAGE_REGISTRIES (comma-separated prefixes).")


def _check_scaling(pool: Any, add: Any) -> None:
    low, high = pool.min_replicas, pool.max_replicas
    if isinstance(high, int) and high < 1:
        add("max_replicas", "At least 1 (disable the pool to stop all its workers).")
    if isinstance(high, int) and high > MAX_REPLICAS:
        add("max_replicas", f"At most {MAX_REPLICAS}.")
    if isinstance(pool.concurrency, int) and pool.concurrency > MAX_CONCURRENCY:
        add("concurrency", f"At most {MAX_CONCURRENCY} tasks at once per worker (add replicas instead).")
    if isinstance(low, int) and isinstance(high, int) and low > high:
        add("min_replicas", f"Must not exceed max replicas ({high}).")
    delay = pool.scale_down_delay_s
    if isinstance(delay, int) and delay > 24 * 3600:
        add("scale_down_delay_s", "At most 86400 s (a day).")


def _check_resources(pool: Any, add: Any) -> None:
    parsed: dict[str, Decimal] = {}
    for field in ("cpu_request", "cpu_limit", "memory_request", "memory_limit"):
        text = str(getattr(pool, field) or "").strip()
        if not text:
            continue
        value = quantity(text)
        if value is None or value <= 0:
            example = "500m or 2" if field.startswith("cpu") else "512Mi or 2Gi"
            add(field, f"{text!r} is not a Kubernetes quantity; write e.g. {example}.")
        else:
            parsed[field] = value
    for kind in ("cpu", "memory"):
        request, limit = parsed.get(f"{kind}_request"), parsed.get(f"{kind}_limit")
        if request is not None and limit is not None and request > limit:
            add(f"{kind}_request", f"Must not exceed the {kind} limit ({getattr(pool, kind + '_limit')}).")
    if isinstance(pool.gpu_count, int) and pool.gpu_count > MAX_GPUS:
        add("gpu_count", f"At most {MAX_GPUS} GPUs per worker.")
    if pool.kind == "gpu" and not pool.gpu_count:
        add("gpu_count", "A gpu pool asks Kubernetes for at least 1 GPU per worker.")
    if pool.kind != "gpu" and pool.gpu_count:
        add("gpu_count", "Only gpu pools ask for GPUs: set the kind to gpu, or the count to 0.")
    if pool.gpu_count and not _RESOURCE_NAME.match(str(pool.gpu_resource or "")):
        add("gpu_resource", "An extended resource name such as nvidia.com/gpu or amd.com/gpu.")


def _check_placement(pool: Any, add: Any) -> None:
    selector = pool.node_selector
    if not isinstance(selector, dict):
        add("node_selector", 'A JSON object of node labels, e.g. {"nvidia.com/gpu": "true"}.')
    else:
        for key, value in selector.items():
            if not isinstance(value, str):
                add("node_selector", f"The value of {key!r} must be a string (quote it: \"{value}\").")
            elif not _LABEL_KEY.match(str(key)) or not _LABEL_VALUE.match(value):
                add("node_selector", f"{key!r}: {value!r} is not a valid Kubernetes label.")
    tolerations = pool.tolerations
    if not isinstance(tolerations, list) or not all(isinstance(t, dict) for t in tolerations):
        add("tolerations", 'A JSON list of objects, e.g. [{"key": "nvidia.com/gpu", "operator": "Exists", '
                           '"effect": "NoSchedule"}].')
        return
    for index, toleration in enumerate(tolerations, start=1):
        unknown = sorted(set(toleration) - _TOLERATION_KEYS)
        if unknown:
            add("tolerations", f"Toleration {index}: unknown field(s) {', '.join(unknown)}; "
                               f"known: {', '.join(sorted(_TOLERATION_KEYS))}.")
        operator = toleration.get("operator", "Equal")
        if operator not in {"Equal", "Exists"}:
            add("tolerations", f"Toleration {index}: operator must be Equal or Exists, not {operator!r}.")
        if operator == "Exists" and toleration.get("value"):
            add("tolerations", f"Toleration {index}: operator Exists takes no value.")
        if toleration.get("effect", "") not in _EFFECTS:
            add("tolerations", f"Toleration {index}: effect must be one of NoSchedule, PreferNoSchedule, "
                               f"NoExecute (or empty), not {toleration.get('effect')!r}.")
        seconds = toleration.get("tolerationSeconds")
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int)):
            add("tolerations", f"Toleration {index}: tolerationSeconds must be an integer.")
