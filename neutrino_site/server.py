"""`neutrino serve --mode http`: the API and dashboard under gunicorn, the websocket beside it under uvicorn.

Why gunicorn with gthread workers: on this design's measurements a django-ninja
endpoint as a sync WSGI view answers in 0.23-0.34 ms p50, where Django's ASGI
handler alone costs 0.55 ms and a thread per request. Sync tasks block their
request thread on the process pool anyway, so threads are the natural fit. The worker class is
gthread's, except that its main loop reads each request (with deadlines and size limits) before a
thread sees it (neutrino_site.http_worker): slow clients cost no thread. Measured with
bench/slow_clients.py; see docs/security.md.
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
import resource
from typing import Any

from django.conf import settings

from neutrino_site import metrics, process
from neutrino_site.sidecar import WebsocketSidecar, head_deadline_protocol
from tasks_app.core.conf import neutrino_settings

logger = logging.getLogger("neutrino.server")

# Sockets one process holds at most (idle keep-alives and requests being read cost no thread).
WORKER_CONNECTIONS = 2048


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

    # Waiting costs uvicorn no thread; the limits are the front door's: a deadline on each request head,
    # a cap on its size, and bodies over the limit refused (neutrino_site.asgi.BodyLimit).
    uvicorn.run("neutrino_site.asgi:application", host=host, port=port, workers=workers,
                log_level="warning", lifespan="auto",
                http=head_deadline_protocol(settings.NEUTRINO_HTTP_HEADER_TIMEOUT_S),
                h11_max_incomplete_event_size=64 * 1024)


def _serve_gunicorn(*, host: str, port: int, workers: int, threads: int) -> None:
    from gunicorn.app.base import BaseApplication

    _raise_open_files(WORKER_CONNECTIONS * workers + 256)

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
        # gthread whose main loop reads each request before a thread gets it (neutrino_site.http_worker).
        "worker_class": "neutrino_site.http_worker.FrontDoorWorker",
        "threads": threads,
        "worker_connections": WORKER_CONNECTIONS,
        "keepalive": 75,
        # What gunicorn's parser accepts (the worker caps the whole head at 64 KiB before that).
        "limit_request_line": 8190,
        "limit_request_fields": 100,
        "limit_request_field_size": 8190,
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


def _raise_open_files(wanted: int) -> None:
    """Lift the soft limit on open files towards `wanted` (never past the hard limit): each socket is one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
