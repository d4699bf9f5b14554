"""The Secret `neutrino-nats`: the NATS users' passwords, which nothing in `k8s/` or the rendered YAML holds.

Keys (all written from one `nats_auth.Credentials`, so they always agree):

    auth.conf     the nats-server `authorization` block, `nats_auth.server_config()`'s text (the same
                  users and permissions as `neutrino dev`); nats.conf includes it
    gateway-url   nats://neutrino-gateway:<password>@nats:4222, the gateway and fast pool Deployments'
                  NEUTRINO_NATS_URL
    worker-url    nats://neutrino-worker:<password>@nats:4222, the pool workers' and the autoscaler's

`neutrino up` creates it with fresh passwords when the namespace has none (a create, so it never
replaces one: a second `up`, or a Secret made by hand, keeps its passwords), and refuses to go on when
one exists without these keys. `python -m pools_app.k8s.nats_secret` prints one with fresh passwords,
for `kubectl create -f -` when the manifests are applied by hand. Imports no Django.

What it cannot do: rotate. A changed Secret reaches nats-server and the pods only when they restart.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from pools_app.k8s.client import KubeClient, KubeError
from workers.engine.nats_auth import GATEWAY_USER, WORKER_USER, Credentials, new_credentials, server_config

Obj = dict[str, Any]

NATS_SECRET_NAME = "neutrino-nats"
AUTH_CONF_KEY = "auth.conf"
# The Secret key that holds each role's NEUTRINO_NATS_URL.
URL_KEYS = {GATEWAY_USER: "gateway-url", WORKER_USER: "worker-url"}
# The client port of the Service `nats` (nats-service.yaml), as pods of the namespace reach it.
SERVICE_URL = "nats://nats:4222"
KEYS = (AUTH_CONF_KEY, *URL_KEYS.values())


def nats_secret(credentials: Credentials, *, namespace: str | None = None) -> Obj:
    """The Secret for these credentials (`stringData`: the API server stores it base64-encoded)."""
    metadata: Obj = {"name": NATS_SECRET_NAME,
                     "labels": {"app.kubernetes.io/name": "nats", "app.kubernetes.io/part-of": "neutrino"}}
    if namespace:
        metadata["namespace"] = namespace
    data = {AUTH_CONF_KEY: server_config(credentials)}
    data.update({key: credentials.url(SERVICE_URL, user) for user, key in URL_KEYS.items()})
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque", "stringData": data}


class NatsSecretError(Exception):
    """The namespace holds a Secret `neutrino-nats` that the manifests cannot use; the message says why."""


def ensure_nats_secret(client: KubeClient, namespace: str) -> bool:
    """Create the Secret with fresh passwords unless the namespace has one; True when it was created.

    A create, never an apply: the passwords of a Secret that exists are kept, and two `neutrino up` at
    once cannot both write one (the second gets 409 and reads the first's).
    """
    try:
        client.create(nats_secret(new_credentials(), namespace=namespace))
        return True
    except KubeError as exc:
        if exc.status != 409:
            raise
    existing = client.get("v1", "Secret", namespace, NATS_SECRET_NAME) or {}
    missing = missing_keys(existing)
    if missing:
        raise NatsSecretError(
            f"Secret {namespace}/{NATS_SECRET_NAME} has no {', '.join(missing)}: delete it "
            f"(kubectl -n {namespace} delete secret {NATS_SECRET_NAME}) and run `neutrino up` again to make a "
            "complete one, then restart the nats StatefulSet and the Neutrino Deployments")
    return False


def missing_keys(secret: Obj) -> list[str]:
    """The keys the manifests read that this stored Secret lacks."""
    present = set(secret.get("data") or {}) | set(secret.get("stringData") or {})
    return [key for key in KEYS if key not in present]


if __name__ == "__main__":
    sys.stdout.write(yaml.safe_dump(nats_secret(new_credentials()), sort_keys=False, default_style=None))
