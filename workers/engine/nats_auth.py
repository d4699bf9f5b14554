"""Who may do what on NATS: one user per role, with the subjects each may publish and subscribe to.

    gateway   publishes tasks (neutrino.<pool>.<task>), events and cancels, uses the JetStream API;
              listens to events and cancels (the HTTP server, its websocket sidecar, the autoscaler)
    worker    consumes its pool through the JetStream API, acks, publishes events and republishes its
              pool's pending tasks (the sweeper); may never publish a cancel
    anyone else: refused at connect (no anonymous user)

`neutrino dev` keeps the passwords in `./data/nats-credentials.json` (mode 0600) and gives each process
its own user in `NEUTRINO_NATS_URL` (nats://user:password@host:port). The Kubernetes manifests write the
same `authorization` block into the nats-server config from the Secret `neutrino-nats`, which `neutrino up`
creates once with `new_credentials()` (pools_app/k8s/nats_secret.py).

What it cannot do: the permissions are per role, not per pool (a worker of one pool may fetch another
pool's messages), and a worker may publish any event. Imports no Django.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlparse, urlunparse

from workers.engine.topology import CANCEL_SUBJECT

GATEWAY_USER = "neutrino-gateway"
WORKER_USER = "neutrino-worker"
CREDENTIALS_FILE = "nats-credentials.json"

# nats-server permission lists by role; deny wins over allow.
PERMISSIONS: dict[str, dict[str, dict[str, list[str]]]] = {
    GATEWAY_USER: {
        "publish": {"allow": ["neutrino.>", "$JS.API.>", "_INBOX.>"]},
        "subscribe": {"allow": ["neutrino.events.>", CANCEL_SUBJECT, "_INBOX.>"]},
    },
    WORKER_USER: {
        "publish": {"allow": ["neutrino.*.*", "neutrino.events.>", "$JS.API.>", "$JS.ACK.>", "_INBOX.>"],
                    "deny": ["neutrino.control.>"]},
        "subscribe": {"allow": [CANCEL_SUBJECT, "$JS.EVENT.ADVISORY.>", "_INBOX.>"]},
    },
}


@dataclass(frozen=True)
class Credentials:
    """The password of each role's user."""

    passwords: dict[str, str]

    def url(self, server_url: str, user: str) -> str:
        """`server_url` with `user` and its password in it."""
        parsed = urlparse(server_url)
        netloc = f"{quote(user, safe='')}:{quote(self.passwords[user], safe='')}@{parsed.hostname}"
        if parsed.port:
            netloc += f":{parsed.port}"
        return urlunparse(parsed._replace(netloc=netloc))


def new_credentials() -> Credentials:
    """Fresh random passwords, one per role (URL-safe, so they need no quoting in a URL)."""
    return Credentials({user: secrets.token_urlsafe(24) for user in PERMISSIONS})


def load_or_create_credentials(data_dir: Path) -> Credentials:
    """The credentials kept in `data_dir` (created with fresh random passwords, mode 0600, when missing)."""
    path = Path(data_dir) / CREDENTIALS_FILE
    try:
        stored = json.loads(path.read_text())
        if isinstance(stored, dict) and all(isinstance(stored.get(user), str) and stored[user]
                                            for user in PERMISSIONS):
            os.chmod(path, 0o600)
            return Credentials({user: stored[user] for user in PERMISSIONS})
    except (OSError, ValueError):
        pass
    credentials = new_credentials()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(credentials.passwords, out)
    os.chmod(path, 0o600)  # a file that existed keeps its mode through O_CREAT
    return credentials


def server_config(credentials: Credentials) -> str:
    """The nats-server `authorization` block for these credentials (JSON is valid nats-server config)."""
    users = [
        {"user": user, "password": credentials.passwords[user], "permissions": PERMISSIONS[user]}
        for user in PERMISSIONS
    ]
    return "authorization " + json.dumps({"users": users}, indent=2) + "\n"
