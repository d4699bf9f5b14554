"""The websocket sidecar of `neutrino serve --mode http`: uvicorn serving the dashboard's websockets
(`neutrino_site.asgi`) on NEUTRINO_WS_PORT, as a process of its own beside the HTTP server.

`WebsocketSidecar` starts it from the HTTP server, restarts it with backoff when it dies and stops it on
exit; `python -m neutrino_site.sidecar websocket ...` is the process itself, which stops when its parent
is gone. It imports no Django app: uvicorn loads the ASGI app, which sets Django up. It serves the
websocket and nothing else (`neutrino_site.asgi.sidecar_application`), with a deadline on request heads
(`head_deadline_protocol`), a 16 KiB cap on them and a 64 KiB cap on websocket messages.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from workers.engine.processes import stop_process

logger = logging.getLogger("neutrino.server")

SIDECAR_STOP_TIMEOUT_S = 10.0
SIDECAR_RESTART_MAX_S = 30.0
PARENT_CHECK_S = 1.0
# The browser sends nothing the dashboard reads; each open page is one connection.
WS_MAX_MESSAGE_BYTES = 64 * 1024
WS_MAX_CONNECTIONS = 2000


class WebsocketSidecar:
    """The websocket process beside the HTTP server: started, watched (restarted with backoff), stopped.

    It inherits this process's environment (settings, NEUTRINO_NATS_URL, the task modules).
    What it cannot do: a port already taken keeps it from starting; it then retries with a growing
    delay and logs each failure, while the HTTP server (and every page, without live updates) runs on.
    """

    def __init__(self, *, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "neutrino_site.sidecar", "websocket", "--host", self.host,
                "--port", str(self.port), "--parent-pid", str(os.getpid())]

    def start(self) -> WebsocketSidecar:
        self.process = subprocess.Popen(self.argv)
        self._watcher = threading.Thread(target=self._watch, name="neutrino-ws-sidecar", daemon=True)
        self._watcher.start()
        return self

    def _watch(self) -> None:
        delay = 1.0
        while not self._stopping.wait(1.0):
            process = self.process
            if process is None or process.poll() is None:
                continue
            logger.warning("the websocket process (port %d) exited with %s; restarting it in %.0f s",
                           self.port, process.returncode, delay)
            if self._stopping.wait(delay):
                return
            started = time.monotonic()
            self.process = subprocess.Popen(self.argv)
            # A process that stayed up a while resets the backoff; one that dies at once grows it.
            delay = 1.0 if time.monotonic() - started > 60 else min(delay * 2, SIDECAR_RESTART_MAX_S)

    def stop(self, timeout_s: float = SIDECAR_STOP_TIMEOUT_S) -> None:
        self._stopping.set()
        process, self.process = self.process, None
        if process is not None and stop_process(process, timeout_s):
            logger.warning("the websocket process did not stop within %.0f s; it was killed", timeout_s)


def head_deadline_protocol(timeout_s: float) -> type:
    """uvicorn's h11 protocol, with a deadline on each request head: a connection idle or half-way
    through a head `timeout_s` after it opened (or after its last answer) is closed.

    uvicorn only times out a connection between two requests, and stops the clock at the first byte
    of the next one, so a client that sends half a head and stops would keep its socket for ever.
    A request being answered, and a connection upgraded to a websocket, are left alone.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadDeadlineH11Protocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_head_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_head_deadline()

        def _arm_head_deadline(self) -> None:
            if not self.transport.is_closing():
                self.loop.call_later(timeout_s, self._head_deadline)

        def _head_deadline(self) -> None:
            waiting = self.cycle is None or self.cycle.response_complete
            if waiting and self.transport.get_protocol() is self and not self.transport.is_closing():
                self.transport.close()

    return HeadDeadlineH11Protocol


def serve_websockets(*, host: str, port: int, parent_pid: int | None = None) -> None:
    """The sidecar itself: uvicorn serving the websocket-only app until SIGTERM or its parent dies."""
    import uvicorn
    from django.conf import settings

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "neutrino_site.settings")
    if parent_pid:
        threading.Thread(target=_exit_with_parent, args=(parent_pid,), name="parent-watch", daemon=True).start()
    # uvicorn loads the app (and sets Django up) itself; the settings module alone is enough here.
    uvicorn.run("neutrino_site.asgi:sidecar_application", factory=True, host=host, port=port,
                log_level="warning", lifespan="off", access_log=False, ws="websockets-sansio",
                http=head_deadline_protocol(settings.NEUTRINO_HTTP_HEADER_TIMEOUT_S),
                h11_max_incomplete_event_size=16 * 1024, ws_max_size=WS_MAX_MESSAGE_BYTES,
                limit_concurrency=WS_MAX_CONNECTIONS)


def _exit_with_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_S)
    logger.warning("the HTTP server (pid %d) is gone; the websocket process stops", parent_pid)
    os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neutrino_site.sidecar")
    commands = parser.add_subparsers(dest="command", required=True)
    websocket = commands.add_parser("websocket", help="serve the dashboard's websocket (the sidecar)")
    websocket.add_argument("--host", default="127.0.0.1")
    websocket.add_argument("--port", type=int, required=True)
    websocket.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args(argv)
    serve_websockets(host=args.host, port=args.port, parent_pid=args.parent_pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
