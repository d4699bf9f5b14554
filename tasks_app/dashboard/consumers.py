"""The dashboard's websocket: one consumer per open page, fed by the process's EventRelay.

It relays batches of changed task ids from the group to its browser as htmx out-of-band swaps,
rendered by `tasks_app.dashboard.pages.live_update` from the database. Per browser, at most one payload
every MIN_INTERVAL_S goes out: ids that arrive while a payload renders or waits are merged into
the next one.

The socket outlives the page's login only briefly: every NEUTRINO_WS_SESSION_CHECK_S (30 s) the
consumer asks the database again whether its session still signs in the same active user (Django's own
`get_user`: the session exists, the user is active, the password has not changed since) and closes the
socket (4401) when it does not, so a logout or a deactivated account ends the live feed within one
interval. Each check closes its database connections afterwards: a socket held open for hours holds no
connection between checks.
"""

from __future__ import annotations

import asyncio
import logging
from importlib import import_module
from typing import Any
from urllib.parse import parse_qsl

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user
from django.db import connections
from django.http import HttpRequest

from tasks_app.core.conf import neutrino_settings
from tasks_app.dashboard import live
from tasks_app.dashboard.pages import csrf_cookie_name, live_log_tail, live_update

logger = logging.getLogger("neutrino.live")

MIN_INTERVAL_S = 0.3
CLOSE_UNAUTHORIZED = 4401
CLOSE_BAD_REQUEST = 4400
CLOSE_CHECK_FAILED = 1011  # the session could not be re-checked: close rather than trust it


def session_user_is_current(*, scope: dict[str, Any], user_id: Any) -> bool:
    """Whether the socket's session, read afresh from its store, still signs in this active user.

    Runs in a worker thread and closes that thread's database connections before it returns.
    """
    try:
        key = getattr(scope.get("session"), "session_key", None)
        if not key:
            return False
        request = HttpRequest()
        # A fresh store, not the scope's copy: that one was loaded when the socket opened.
        request.session = import_module(settings.SESSION_ENGINE).SessionStore(session_key=key)
        user = get_user(request)
        return bool(user.is_authenticated and user.is_active and user.pk == user_id)
    finally:
        connections.close_all()


class TaskEventsConsumer(AsyncWebsocketConsumer):
    """`/ws/dashboard/?view=list&<the list's filters>` or `/ws/dashboard/?view=task&id=<task id>`."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        self.params = dict(parse_qsl(self.scope.get("query_string", b"").decode("latin-1")))
        if self.params.get("view") not in ("list", "task"):
            await self.close(code=CLOSE_BAD_REQUEST)
            return
        self.user = user
        self.csrf_secret = self.scope.get("cookies", {}).get(csrf_cookie_name())
        self.pending: set[str] = set()
        self.everything = True  # the first payload: the current state, whatever changed
        # A task page tails its log: the lines stored after the chunk the page was rendered with.
        self.log_seq = int(self.params.get("log_seq", "0")) if self.params.get("log_seq", "0").isdigit() else 0
        self.log_pending = self.params.get("view") == "task"
        self.sender: asyncio.Task[None] | None = None
        await live.ensure_relay(neutrino_settings().nats_url)
        await self.channel_layer.group_add(live.GROUP, self.channel_name)
        await self.accept()
        self.session_checker = asyncio.get_running_loop().create_task(self._recheck_session())
        self._wake()

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "user"):
            await self.channel_layer.group_discard(live.GROUP, self.channel_name)
        for task in (getattr(self, "sender", None), getattr(self, "session_checker", None)):
            if task is not None and not task.done():
                task.cancel()

    async def _recheck_session(self) -> None:
        """Every NEUTRINO_WS_SESSION_CHECK_S: close the socket once its login is gone."""
        interval_s = neutrino_settings().ws_session_check_s
        while True:
            await asyncio.sleep(interval_s)
            try:
                current = await sync_to_async(session_user_is_current)(scope=self.scope, user_id=self.user.pk)
            except Exception:
                logger.exception("re-checking the session of a dashboard socket failed; closing it")
                await self.close(code=CLOSE_CHECK_FAILED)
                return
            if not current:
                logger.info("dashboard socket of user %s closed: signed out or deactivated", self.user.pk)
                await self.close(code=CLOSE_UNAUTHORIZED)
                return

    async def tasks_changed(self, event: dict[str, Any]) -> None:
        """A batch from the relay: remember the ids; the sender renders them."""
        task_ids = event.get("task_ids")
        if task_ids is None:
            self.everything = True
        else:
            self.pending.update(task_ids)
        self._wake()

    async def logs_changed(self, event: dict[str, Any]) -> None:
        """Tasks whose log grew: a task page showing one of them appends its new lines."""
        if self.params.get("view") == "task" and self.params.get("id") in (event.get("task_ids") or ()):
            self.log_pending = True
            self._wake()

    def _wake(self) -> None:
        if self.sender is None or self.sender.done():
            self.sender = asyncio.get_running_loop().create_task(self._send_pending())

    async def _send_pending(self) -> None:
        while self.pending or self.everything or self.log_pending:
            payload = None
            if self.pending or self.everything:
                changed = None if self.everything else sorted(self.pending)
                self.pending, self.everything = set(), False
                try:
                    payload = await database_sync_to_async(live_update)(
                        params=self.params, changed=changed, user=self.user, csrf_secret=self.csrf_secret
                    )
                except ValueError:
                    await self.close(code=CLOSE_BAD_REQUEST)
                    return
                except Exception:
                    logger.exception("live update for %r failed", self.params)
            if self.log_pending:
                self.log_pending = False
                try:
                    tail, self.log_seq = await database_sync_to_async(live_log_tail)(params=self.params,
                                                                                   after_seq=self.log_seq)
                except ValueError:
                    await self.close(code=CLOSE_BAD_REQUEST)
                    return
                except Exception:
                    logger.exception("live log tail for %r failed", self.params)
                    tail = None
                payload = (payload or "") + (tail or "") or None
            if payload:
                await self.send(text_data=payload)
                await asyncio.sleep(MIN_INTERVAL_S)
