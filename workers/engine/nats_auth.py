"""Who may do what on NATS: one user per role, with the subjects each may publish and subscribe to.

    gateway   publishes tasks (neutrino.<pool>.<task>), events and cancels; on the JetStream API it may
              read, create and update the stream NEUTRINO_TASKS and read, create and delete its consumers
              (pools added and removed); listens to events and cancels (the HTTP server, its websocket
              sidecar, `neutrino dev`'s autoscaler)
    worker    on the JetStream API: reads, creates and updates NEUTRINO_TASKS (`ensure_stream`), reads and
              creates its consumers (`ensure_consumer`, the depth of a pool), fetches from them, reads and
              deletes one message by sequence (a message past max deliveries); acks that stream's
              messages; publishes events and republishes pending tasks (the sweeper); listens to cancels
              and that stream's max-deliveries advisories; may never publish a cancel. The Kubernetes
              autoscaler connects as a worker.
    anyone else: refused at connect (no anonymous user)

Everything not listed is refused: neither role may delete or purge the stream, make or touch another
stream, or use the rest of the JetStream API (account info, listings, direct gets, pausing consumers);
a worker may not delete a consumer. A refused JetStream request gets no answer (the client times out) and
the server reports a permissions violation to the client.

`neutrino dev` keeps the passwords in `./data/nats-credentials.json` (mode 0600) and gives each process
its own user in `NEUTRINO_NATS_URL` (nats://user:password@host:port). The Kubernetes manifests write the
same `authorization` block into the nats-server config from the Secret `neutrino-nats`, which `neutrino up`
creates once with `new_credentials()` (pools_app/k8s/nats_secret.py).

What it cannot do: the permissions are per role, not per pool (a worker of one pool may fetch, ack, read
and delete another pool's messages and create or update any consumer of the stream, and may update the
stream's subjects), and a worker may publish any event. Imports no Django.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlparse, urlunparse

from workers.engine.topology import CANCEL_SUBJECT, MAX_DELIVERIES_ADVISORY, STREAM

GATEWAY_USER = "neutrino-gateway"
WORKER_USER = "neutrino-worker"
CREDENTIALS_FILE = "nats-credentials.json"

# The JetStream API subjects (as nats.py sends them) each role needs, on the one stream only.
_STREAM_SETUP = [f"$JS.API.STREAM.{op}.{STREAM}" for op in ("INFO", "CREATE", "UPDATE")]  # ensure_stream
_CONSUMER_SETUP = [
    f"$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.*",  # ensure_consumer (a durable_name)
    f"$JS.API.CONSUMER.CREATE.{STREAM}.>",  # the same by `name`, as newer nats.py versions may send it
    f"$JS.API.CONSUMER.INFO.{STREAM}.*",  # pool_depth
]
_CONSUME = [
    f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.*",  # fetch
    f"$JS.API.STREAM.MSG.GET.{STREAM}",  # a message past max deliveries (control.py) ...
    f"$JS.API.STREAM.MSG.DELETE.{STREAM}",  # ... failed, then deleted
    f"$JS.ACK.{STREAM}.>",  # ack, nak, term, in_progress
]

# nats-server permission lists by role; deny wins over allow, and what no allow names is refused.
PERMISSIONS: dict[str, dict[str, dict[str, list[str]]]] = {
    GATEWAY_USER: {
        "publish": {"allow": ["neutrino.>", *_STREAM_SETUP, *_CONSUMER_SETUP,
                              f"$JS.API.CONSUMER.DELETE.{STREAM}.*",  # a removed pool's consumer
                              "_INBOX.>"]},
        "subscribe": {"allow": ["neutrino.events.>", CANCEL_SUBJECT, "_INBOX.>"]},
    },
    WORKER_USER: {
        "publish": {"allow": ["neutrino.*.*", "neutrino.*.*.high", "neutrino.*.*.low", "neutrino.events.>",
                              *_STREAM_SETUP, *_CONSUMER_SETUP, *_CONSUME,
                              "_INBOX.>"],
                    "deny": ["neutrino.control.>"]},
        # The high and low subjects: a worker hears of a new task of those levels (pool_worker.priority).
        "subscribe": {"allow": [CANCEL_SUBJECT, MAX_DELIVERIES_ADVISORY, "neutrino.*.*.high", "neutrino.*.*.low",
                                "_INBOX.>"]},
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
