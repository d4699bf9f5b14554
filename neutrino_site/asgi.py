"""ASGI entry point, for what needs it: the dashboard's websocket and the user's ASGI fallback app.

`neutrino serve --mode http` runs this under uvicorn on the websocket port, beside the WSGI server
(neutrino_site.server). Websockets go to the Channels consumers, for signed-in users only. HTTP
paths that Neutrino's URLconf resolves go to Django; every other path goes to the app named by
NEUTRINO_ASGI_FALLBACK (the seed's "ASGI fallback for non-Neutrino routes"), which also gets the
lifespan events.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "neutrino_site.settings")
django.setup()

# Django is set up: the consumers, the auth middleware and the URLconf can be imported now.
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
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


_fallback_spec = neutrino_settings().asgi_fallback
_fallback = load_fallback(_fallback_spec) if _fallback_spec else None
http_app: Any = FallbackRouter(django_app, _fallback) if _fallback is not None else django_app

_routes: dict[str, Any] = {
    "http": http_app,
    "websocket": SameHostOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
}
if _fallback is not None:
    _routes["lifespan"] = _fallback
application: Any = ProtocolTypeRouter(_routes)
