"""`neutrino serve --mode http`: the API and dashboard under gunicorn, the websocket beside it under uvicorn.

Why gunicorn with gthread workers: on this design's measurements a django-ninja
endpoint as a sync WSGI view answers in 0.23-0.34 ms p50, where Django's ASGI
handler alone costs 0.55 ms and a thread per request. Sync tasks block their
request thread on the process pool anyway, so threads are the natural fit.
When NEUTRINO_ASGI_FALLBACK is set the server runs the ASGI app under uvicorn
instead, because only ASGI can hand paths to the user's ASGI app.

Websockets need ASGI, so the dashboard's live updates come from a second, small
process: uvicorn serving `neutrino_site.asgi:application` on NEUTRINO_WS_PORT
(`neutrino serve` sets it: --ws-port, default the HTTP port + 1). It is started
before the HTTP server, restarted if it dies, and stopped when the HTTP server
exits; if the HTTP server is killed outright, the sidecar notices its parent is
gone within a second and stops too. Long-lived connections stay off the
request threads that sync calls need.
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


def serve_http(*, host: str, port: int, workers: int, threads: int, asgi: bool = False) -> None:
    from tasks_app.core.conf import neutrino_settings

    ws_port = neutrino_settings().ws_port
    if ws_port and ws_port == port:
        raise SystemExit(f"neutrino serve: the websocket port must differ from the HTTP port ({port})")
    sidecar = WebsocketSidecar(host=host, port=ws_port).start() if ws_port else None
    try:
        if asgi:
            _serve_uvicorn(host=host, port=port, workers=workers)
        else:
            _serve_gunicorn(host=host, port=port, workers=workers, threads=threads)
    finally:
        if sidecar is not None:
            sidecar.stop()


def _serve_uvicorn(*, host: str, port: int, workers: int) -> None:
    import uvicorn

    uvicorn.run("neutrino_site.asgi:application", host=host, port=port, workers=workers,
                log_level="warning", lifespan="auto")


def _serve_gunicorn(*, host: str, port: int, workers: int, threads: int) -> None:
    from gunicorn.app.base import BaseApplication

    class NeutrinoGunicorn(BaseApplication):
        def __init__(self, options: dict[str, Any]) -> None:
            self.options = options
            super().__init__()

        def load_config(self) -> None:
            for key, value in self.options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            from neutrino_site.wsgi import application

            return application

    options = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "keepalive": 75,
        # Long-polls (`GET /tasks/<id>?wait=`) hold a request for up to their wait; the worker
        # timeout only fires when a worker stops heartbeating, which a gthread worker does not.
        "timeout": 120,
        "graceful_timeout": 30,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "post_worker_init": _post_worker_init,
        "worker_exit": _worker_exit,
        "child_exit": _child_exit,  # /metrics: a dead process's files (PROMETHEUS_MULTIPROC_DIR)
        "proc_name": "neutrino-http",
    }
    NeutrinoGunicorn(options).run()


def _post_worker_init(worker: Any) -> None:
    import gc

    from tasks_app import runtime

    runtime.warm_up()
    # Everything loaded so far (Django, the apps, the task modules) lives as long as the process:
    # keep it out of the collector's generations so a collection stays short on the request path.
    gc.collect()
    gc.freeze()


def _child_exit(server: Any, worker: Any) -> None:
    from neutrino_site.metrics import child_exit

    child_exit(server, worker)


def _worker_exit(server: Any, worker: Any) -> None:
    from tasks_app import runtime

    runtime.shutdown()


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
        return [sys.executable, "-m", "neutrino_site.server", "websocket", "--host", self.host,
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


def serve_websockets(*, host: str, port: int, parent_pid: int | None = None) -> None:
    """The sidecar itself: uvicorn serving the ASGI app (websockets) until SIGTERM or its parent dies."""
    import uvicorn

    if parent_pid:
        threading.Thread(target=_exit_with_parent, args=(parent_pid,), name="parent-watch", daemon=True).start()
    uvicorn.run("neutrino_site.asgi:application", host=host, port=port, log_level="warning",
                lifespan="off", access_log=False, ws="websockets-sansio")


def _exit_with_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_S)
    logger.warning("the HTTP server (pid %d) is gone; the websocket process stops", parent_pid)
    os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neutrino_site.server")
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
