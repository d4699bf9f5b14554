"""Websocket routes (served by the ASGI process; see neutrino_site.asgi)."""

from django.urls import path

from tasks_app.dashboard.consumers import TaskEventsConsumer
from tasks_app.dashboard.pages import WS_PATH

websocket_urlpatterns = [
    path(WS_PATH.lstrip("/"), TaskEventsConsumer.as_asgi()),
]
