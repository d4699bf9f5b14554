"""`neutrino k8s render` and `neutrino up`: render the manifests and the database's pools, then apply them.

`neutrino up --dry-run` prints the very objects a real run applies (the same render, as YAML) and
opens no connection. A real run first creates the Secret `neutrino-nats` (NATS passwords) when the
namespace has none, then applies them in order (server-side apply, field manager `neutrino`,
forced), reports each, and waits for the rollouts; errors name the object, the HTTP status and the
API server's message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TextIO

from pools_app.k8s.apply import apply_all, wait_rollouts
from pools_app.k8s.client import KubeClient, KubeError, api_client
from pools_app.k8s.kubectl import KustomizeError
from pools_app.k8s.nats_secret import NATS_SECRET_NAME, NatsSecretError, ensure_nats_secret
from pools_app.k8s.render import Obj, PoolShape, RenderError, database_pools, default_pools, render, to_yaml


@dataclass(frozen=True)
class RenderOptions:
    overlay: str = "base"
    namespace: str | None = None
    image: str | None = None  # None: NEUTRINO_IMAGE, else the manifests' own
    host: str | None = None  # None: the manifests' own (neutrino.example.com)


def render_objects(options: RenderOptions, *, err: TextIO) -> list[Obj]:
    from django.conf import settings

    image = options.image or settings.NEUTRINO_IMAGE or None
    return render(overlay=options.overlay, pools=pools_to_render(err=err), namespace=options.namespace, image=image,
                  host=options.host)


def pools_to_render(*, err: TextIO) -> list[PoolShape]:
    """The database's NATS pools; before its first migration (a first deploy), the default pools."""
    from django.db import DatabaseError

    try:
        return database_pools()
    except DatabaseError as exc:
        pools = default_pools()
        names = ", ".join(pool.name for pool in pools)
        print(f"note: cannot read the pools from the database ({type(exc).__name__}: {exc}); rendering the "
              f"default pools ({names}). Point DATABASE_URL at the cluster's database once it is migrated.",
              file=err)
        return pools


def render_command(options: RenderOptions, *, out: TextIO, err: TextIO) -> int:
    try:
        objects = render_objects(options, err=err)
    except (RenderError, KustomizeError) as exc:
        print(f"neutrino k8s render: {exc}", file=err)
        return 2
    out.write(to_yaml(objects))
    return 0


def up_command(options: RenderOptions, *, context: str | None, kube_url: str, dry_run: bool, timeout_s: float,
               out: TextIO, err: TextIO, poll_s: float = 2.0, live: bool | None = None) -> int:
    from django.conf import settings

    try:
        objects = render_objects(options, err=err)
    except (RenderError, KustomizeError) as exc:
        print(f"neutrino up: {exc}", file=err)
        return 2
    if dry_run:
        out.write(to_yaml(objects))
        return 0
    try:
        client = KubeClient(api_client(kube_url=kube_url or settings.NEUTRINO_KUBE_URL, context=context))
    except KubeError as exc:
        print(f"neutrino up: {exc}", file=err)
        return 2
    try:
        namespace = objects[0]["metadata"].get("namespace", "") if objects else ""
        # Before the workloads: nats-server and every pod read it. Made here, never rendered, so no
        # password is in the YAML; kept once made (see nats_secret.py).
        try:
            created = ensure_nats_secret(client, namespace)
        except (KubeError, NatsSecretError) as exc:
            print(f"neutrino up: {exc}", file=err)
            return 1
        state = "created with new passwords" if created else "exists; its passwords are kept"
        print(f"Secret {namespace}/{NATS_SECRET_NAME} (NATS users): {state}", file=out)
        print(f"applying {len(objects)} objects to {client.host} (namespace {namespace}):", file=out)
        errors = apply_all(client, objects, out=out)
        if errors:
            print(f"neutrino up: {len(errors)} of {len(objects)} objects were refused:", file=err)
            for error in errors:
                print(f"  {error}", file=err)
            return 1
        print(f"waiting for rollouts (at most {timeout_s:.0f} s):", file=out)
        if not wait_rollouts(client, objects, timeout_s=timeout_s, out=out, poll_s=poll_s, live=live):
            return 1
        print("all rolled out", file=out)
        return 0
    finally:
        client.close()
