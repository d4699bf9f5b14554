"""ASGI entry point, for what needs it: the dashboard's websocket and the user's ASGI fallback app.

`neutrino serve --mode http` runs `sidecar_application()` under uvicorn on the websocket port, beside
the WSGI server (neutrino_site.server): the dashboard's websocket and nothing else. Every HTTP request
there is refused at once, before its body is read, and the process keeps no database connection between
messages (the consumers and the session check reach the database through `database_sync_to_async`,
which closes the thread's connection after each call when CONN_MAX_AGE is 0).

`application` is the whole app, for `neutrino serve --asgi` or NEUTRINO_ASGI_FALLBACK: websockets go to
the Channels consumers, for signed-in users only. HTTP paths that Neutrino's URLconf resolves go to
Django; every other path goes to the app named by NEUTRINO_ASGI_FALLBACK (the seed's "ASGI fallback for
non-Neutrino routes"), which also gets the lifespan events. Bodies over the limit get 413 unread
(`BodyLimit`).
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "neutrino_site.settings")
django.setup()

# Django is set up: the consumers, the auth middleware and the URLconf can be imported now.
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.db import connections  # noqa: E402
from django.urls import Resolver404, resolve  # noqa: E402

from neutrino_site.auth import SameHostOriginValidator  # noqa: E402
from tasks_app.core.conf import neutrino_settings  # noqa: E402
from tasks_app.dashboard.routing import websocket_urlpatterns  # noqa: E402

django_app = get_asgi_application()


def load_fallback(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    app = module
    for part in attr.split("."):
        app = getattr(app, part)
    return app


class FallbackRouter:
    """Send paths Django owns to Django and the rest to the user's ASGI app."""

    def __init__(self, neutrino: Any, fallback: Any) -> None:
        self.neutrino = neutrino
        self.fallback = fallback

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.fallback(scope, receive, send)
            return
        try:
            resolve(scope.get("path", "/"))
        except Resolver404:
            await self.fallback(scope, receive, send)
            return
        await self.neutrino(scope, receive, send)


async def _answer(send: Any, status: int, error: str, message: str) -> None:
    body = json.dumps({"error": error, "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class WebsocketOnly:
    """The sidecar's app: websockets go on; any HTTP request gets 404 at once, its body never read.

    A client that is still sending a large body when the answer goes out may see the connection reset
    instead of the 404: nothing but the websocket is served on this port, so nothing legitimate sends one.
    """

    def __init__(self, websocket: Any) -> None:
        self.websocket = websocket

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await self.websocket(scope, receive, send)
        elif scope["type"] == "http":
            await _answer(send, 404, "not_found", "this port serves the dashboard's websocket only")


class BodyLimit:
    """Bodies over `limit_bytes` get 413: at once when Content-Length says so, else when the count passes it.

    A declared body up to `drain_bytes` is read and discarded first, so that a client that writes its
    whole body before reading (urllib, requests) reads the 413 rather than a reset connection.
    """

    def __init__(self, app: Any, *, limit_bytes: int, drain_bytes: int = 64 * 1024 * 1024) -> None:
        self.app = app
        self.limit_bytes = limit_bytes
        self.drain_bytes = drain_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length", b"0")
        length = int(declared) if declared.isdigit() else 0
        message = f"request body is over the {self.limit_bytes} byte limit"
        if length > self.limit_bytes:
            if length <= self.drain_bytes:
                while (event := await receive())["type"] == "http.request" and event.get("more_body"):
                    pass
            await _answer(send, 413, "content_too_large", message)
            return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            event = await receive()
            seen += len(event.get("body", b""))
            if seen > self.limit_bytes:
                raise _TooLarge
            return event

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await _answer(send, 413, "content_too_large", message)


class _TooLarge(Exception):
    pass


_fallback_spec = neutrino_settings().asgi_fallback
_fallback = load_fallback(_fallback_spec) if _fallback_spec else None
http_app: Any = FallbackRouter(django_app, _fallback) if _fallback is not None else django_app
websocket_app: Any = SameHostOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))

_routes: dict[str, Any] = {
    "http": BodyLimit(http_app, limit_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE),
    "websocket": websocket_app,
}
if _fallback is not None:
    _routes["lifespan"] = _fallback
application: Any = ProtocolTypeRouter(_routes)


def sidecar_application() -> Any:
    """The websocket sidecar's app (a uvicorn factory): websockets only, no database connection kept.

    Called once in the sidecar process, before any connection is opened: with CONN_MAX_AGE 0 every
    `database_sync_to_async` call (the session check, each live update) closes its connection after use.
    """
    for alias in connections:
        connections.settings[alias]["CONN_MAX_AGE"] = 0
    return WebsocketOnly(websocket_app)
