"""Connecting to NATS, the one way every process does it: the first connect and every reconnect are
retried forever (nats.py retries the first one too when `max_reconnect_attempts` is negative), and an
outage is logged at most every few seconds instead of once per try.

Imports no Django.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlparse, urlunparse

import nats
from nats.aio.client import Client

RECONNECT_WAIT_S = 0.5
LOG_OUTAGE_EVERY_S = 5.0

Callback = Callable[[], Awaitable[None]]


async def connect(url: str, *, name: str, logger: logging.Logger, connect_timeout_s: float = 2.0,
                  disconnected_cb: Callback | None = None, reconnected_cb: Callback | None = None,
                  until: asyncio.Event | None = None) -> Client | None:
    """A connection to `url`, however long NATS takes to come up; None when `until` is set first.

    While NATS cannot be reached, `logger` warns at most every `LOG_OUTAGE_EVERY_S`.
    """
    outage = _OutageLog(url, logger)
    options: dict[str, object] = {}
    if disconnected_cb is not None:
        options["disconnected_cb"] = disconnected_cb
    if reconnected_cb is not None:
        options["reconnected_cb"] = reconnected_cb
    connecting = asyncio.ensure_future(nats.connect(
        url, name=name, max_reconnect_attempts=-1, reconnect_time_wait=RECONNECT_WAIT_S,
        connect_timeout=connect_timeout_s, allow_reconnect=True, error_cb=outage.on_error, **options,
    ))
    outage.client = connecting
    if until is not None:
        stopping = asyncio.ensure_future(until.wait())
        try:
            await asyncio.wait([connecting, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not connecting.done():
            connecting.cancel()
            try:
                await connecting
            except (asyncio.CancelledError, Exception):
                pass
            return None
    return await connecting


def shown(url: str) -> str:
    """`url` as logs and messages may show it: without its password (the user name stays)."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    netloc = f"{parsed.username}:***@{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")
    return urlunparse(parsed._replace(netloc=netloc))


class _OutageLog:
    def __init__(self, url: str, logger: logging.Logger) -> None:
        self.url = url
        self.logger = logger
        self.client: asyncio.Future[Client] | None = None
        self._logged_at = -1e9

    async def on_error(self, exc: Exception) -> None:
        connected = self.client is not None and self.client.done() and not self.client.cancelled() \
            and self.client.exception() is None and self.client.result().is_connected
        if connected:
            self.logger.debug("NATS error: %s", exc)
            return
        now = time.monotonic()
        if now - self._logged_at >= LOG_OUTAGE_EVERY_S:
            self._logged_at = now
            self.logger.warning("cannot reach NATS at %s (%s: %s); retrying", shown(self.url), type(exc).__name__, exc)
