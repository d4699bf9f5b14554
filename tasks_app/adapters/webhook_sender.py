"""Sends one signed webhook over HTTP: the scheduler's only way out to a receiver.

Each request is checked against the allow-list (`tasks_app.core.webhook_policy`) just before it is sent
and goes to the address that check approved (the URL's host stays in the Host header and the TLS name),
redirects are not followed, and every request has a timeout. Several are sent at once on a small thread
pool, so one slow receiver delays the others by at most its timeout.

Built once per scheduler process (`workers.scheduler.jobs`); `close()` ends its connections.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from neutrino.webhooks import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, signature_header
from tasks_app.core.webhook_policy import AllowList, Resolver, UrlRefused, system_resolver, webhook_destination

USER_AGENT = "Neutrino-Webhooks/1"
SENDERS = 8
ERROR_CHARS = 300


@dataclass(frozen=True)
class Outgoing:
    """One attempt to make: the exact body and what signs it."""

    delivery_id: int
    url: str
    event: str
    body: bytes
    secret: str


@dataclass(frozen=True)
class SendOutcome:
    delivered: bool
    status_code: int | None = None
    error: str = ""
    final: bool = False  # not worth another attempt (the URL is refused for good)


class WebhookSender:
    def __init__(self, *, allow: AllowList, timeout_s: float, resolve: Resolver = system_resolver,
                 senders: int = SENDERS) -> None:
        self._allow = allow
        self._resolve = resolve
        # No proxies from the environment: the address checked must be the address connected to.
        self._client = httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False)
        self._pool = ThreadPoolExecutor(max_workers=senders, thread_name_prefix="neutrino-webhook")

    def send_all(self, outgoing: Sequence[Outgoing]) -> list[SendOutcome]:
        """Send each (at once, up to SENDERS in parallel); their outcomes in order."""
        return list(self._pool.map(self.send, outgoing))

    def send(self, item: Outgoing) -> SendOutcome:
        try:
            dest = webhook_destination(item.url, self._allow, resolve=self._resolve)
        except UrlRefused as exc:
            return SendOutcome(delivered=False, error=f"refused: {exc}"[:ERROR_CHARS], final=exc.final)
        address = dest.addresses[0]
        pinned = f"{dest.scheme}://{f'[{address}]' if ':' in address else address}:{dest.port}{dest.target}"
        headers = {
            "Host": dest.host_header,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_HEADER: item.event,
            DELIVERY_HEADER: str(item.delivery_id),
            SIGNATURE_HEADER: signature_header(item.secret, item.body, int(time.time())),
        }
        extensions = {"sni_hostname": dest.host} if dest.scheme == "https" else {}
        try:
            response = self._client.post(pinned, content=item.body, headers=headers, extensions=extensions)
        except httpx.HTTPError as exc:
            return SendOutcome(delivered=False, error=f"{type(exc).__name__}: {exc}"[:ERROR_CHARS])
        if 200 <= response.status_code < 300:
            return SendOutcome(delivered=True, status_code=response.status_code)
        said = response.text[:200].strip()
        return SendOutcome(delivered=False, status_code=response.status_code,
                           error=f"answered {response.status_code}{f': {said}' if said else ''}"[:ERROR_CHARS])

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()
