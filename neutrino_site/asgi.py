"""ASGI entry point, for what needs it: the user's ASGI fallback app and long-lived connections.

Paths that Neutrino's URLconf resolves go to Django; every other path goes to the
app named by NEUTRINO_ASGI_FALLBACK (the seed's "ASGI fallback for non-Neutrino routes").
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import django
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "neutrino_site.settings")
django.setup()

from django.urls import Resolver404, resolve  # noqa: E402

from tasks_app.conf import neutrino_settings  # noqa: E402

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
application: Any = FallbackRouter(django_app, load_fallback(_fallback_spec)) if _fallback_spec else django_app
