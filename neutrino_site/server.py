"""`neutrino serve --mode http`: the API and dashboard under gunicorn.

Why gunicorn with gthread workers: on this design's measurements a django-ninja
endpoint as a sync WSGI view answers in 0.23-0.34 ms p50, where Django's ASGI
handler alone costs 0.55 ms and a thread per request. Sync tasks block their
request thread on the process pool anyway, so threads are the natural fit.
When NEUTRINO_ASGI_FALLBACK is set the server runs the ASGI app under uvicorn
instead, because only ASGI can hand paths to the user's ASGI app.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("neutrino.server")


def serve_http(*, host: str, port: int, workers: int, threads: int, asgi: bool = False) -> None:
    if asgi:
        import uvicorn

        uvicorn.run("neutrino_site.asgi:application", host=host, port=port, workers=workers,
                    log_level="warning", lifespan="auto")
        return
    from gunicorn.app.base import BaseApplication

    class NeutrinoGunicorn(BaseApplication):  # type: ignore[misc]
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
        "proc_name": "neutrino-http",
    }
    NeutrinoGunicorn(options).run()


def _post_worker_init(worker: Any) -> None:
    from tasks_app import runtime

    runtime.warm_up()


def _worker_exit(server: Any, worker: Any) -> None:
    from tasks_app import runtime

    runtime.shutdown()
