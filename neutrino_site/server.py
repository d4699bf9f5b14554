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

import gc
import logging
from typing import Any

from neutrino_site import metrics, process
from neutrino_site.sidecar import WebsocketSidecar
from tasks_app.core.conf import neutrino_settings

logger = logging.getLogger("neutrino.server")


def serve_http(*, host: str, port: int, workers: int, threads: int, asgi: bool = False) -> None:
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
            # Each gunicorn worker builds the WSGI app after the fork; the CLI process never needs one.
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
    process.warm_up()
    # Everything loaded so far (Django, the apps, the task modules) lives as long as the process:
    # keep it out of the collector's generations so a collection stays short on the request path.
    gc.collect()
    gc.freeze()


def _child_exit(server: Any, worker: Any) -> None:
    metrics.child_exit(server, worker)


def _worker_exit(server: Any, worker: Any) -> None:
    process.shutdown()
