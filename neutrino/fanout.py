"""Fan-out from inside a task: the tasks, groups and chains it submits are linked to it as its children.

    import neutrino

    @app.task(execution_mode="async")
    def crawl(urls: list[str]) -> str:
        group = neutrino.group("fetch", [{"url": u} for u in urls], then="merge")
        return group.id  # returns at once: merge(results=[...]) runs once every fetch has finished

A task runs in a child process of its worker, without Django: it submits through the HTTP API like any
client, at `NEUTRINO_URL` with the token `NEUTRINO_TOKEN` (set both in the worker's environment; its
children inherit it). Every submit of a client made inside a task sends the running task's id as
`parent_id`, so the dashboard shows the tree and cancelling the parent cancels what has not finished.

Waiting is honest: `handle.wait()` inside a task holds the task's worker slot for as long as it waits
(and a pool whose every slot waits for children that need a slot of the same pool deadlocks until the
waits time out). To wait without holding a slot, end the task and let a group's `then` callback, or a
chain's next step, carry on with the results.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from neutrino.client import AsyncTask, GroupInfo, NeutrinoClient

URL_ENV = "NEUTRINO_URL"
TOKEN_ENV = "NEUTRINO_TOKEN"

def client_from_env() -> NeutrinoClient:
    """A client of the gateway named by NEUTRINO_URL (and NEUTRINO_TOKEN), as a task's process gets them."""
    url = os.environ.get(URL_ENV)
    if not url:
        raise RuntimeError(f"{URL_ENV} is not set: a task submits through the gateway's HTTP API; set "
                           f"{URL_ENV} (and {TOKEN_ENV}) in the worker's environment")
    return NeutrinoClient(url, token=os.environ.get(TOKEN_ENV) or None)


def submit(name: str, /, **args: Any) -> AsyncTask:
    """Queue task `name` as a child of the running task; its handle."""
    client = client_from_env()
    return client.submit(name, args)


def group(name: str, items: Iterable[Mapping[str, Any]], *, then: str | None = None,
          then_args: Mapping[str, Any] | None = None, policy: str = "all") -> GroupInfo:
    """`NeutrinoClient.group`, as a child of the running task."""
    with client_from_env() as client:
        return client.group(name, items, then=then, then_args=then_args, policy=policy)


def chain(steps: Sequence[tuple[str, Mapping[str, Any]] | str]) -> GroupInfo:
    """`NeutrinoClient.chain`, as a child of the running task."""
    with client_from_env() as client:
        return client.chain(steps)
