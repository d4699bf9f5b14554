"""Probes for Kubernetes (or any supervisor): `/healthz` and `/readyz`, open to all, cheap.

- `/healthz` (liveness): the process answers HTTP. It checks nothing else on purpose: a database or
  NATS outage must not make Kubernetes restart every server at once.
- `/readyz` (readiness): the database answers a trivial query on a table of Neutrino's (so a server
  is not ready before the migration Job has run), and, when NEUTRINO_NATS_URL is set,
  this process is connected to NATS. 200 when both hold; 503 naming the check that failed otherwise.

Both answer JSON, and neither needs a signed-in user (`login_not_required`). So each check answers only
`ok` or `error` (a NATS check only when NEUTRINO_NATS_URL is set): why it failed (an exception's text,
the NATS URL, which may hold credentials) goes to the log, not to whoever asks.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from pools_app.models import Pool
from tasks_app.core.ports import Broker, ports_of

logger = logging.getLogger("neutrino.health")

OK = "ok"
ERROR = "error"


@never_cache
@login_not_required
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@login_not_required
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _check_database()}
    broker = ports_of(request).broker
    if broker is not None:
        checks["nats"] = _check_nats(broker)
    failed = sorted(name for name, result in checks.items() if result != OK)
    body: dict[str, object] = {"status": "ok" if not failed else "unavailable", "checks": checks}
    if failed:
        body["failed"] = failed
    return JsonResponse(body, status=503 if failed else 200)


def _check_database() -> str:
    """One indexed row of a small table Neutrino's migrations create: fails until they have run."""
    try:
        Pool.objects.only("id").exists()
    except DatabaseError as exc:
        logger.warning("not ready: the database check failed: %s: %s", type(exc).__name__, exc)
        return ERROR
    return OK


def _check_nats(broker: Broker) -> str:
    if not broker.connected:
        logger.warning("not ready: not connected to NATS at %s", _without_credentials(broker.url))
        return ERROR
    return OK


def _without_credentials(url: str) -> str:
    """The URL without a user or password (`nats://user:secret@host:4222` -> `nats://host:4222`)."""
    try:
        parts = urlsplit(url)
        return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    except ValueError:
        return "<unparsable URL>"
