"""Probes for Kubernetes (or any supervisor): `/healthz` and `/readyz`, open to all, cheap.

- `/healthz` (liveness): the process answers HTTP. It checks nothing else on purpose: a database or
  NATS outage must not make Kubernetes restart every server at once.
- `/readyz` (readiness): the database answers a trivial query on a table of Neutrino's (so a server
  is not ready before the migration Job has run), and, when NEUTRINO_NATS_URL is set,
  this process is connected to NATS. 200 when both hold; 503 naming the check that failed otherwise.

Both answer JSON, and neither needs a signed-in user (`login_not_required`).
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from pools_app.models import Pool
from tasks_app.core.ports import Broker, ports_of


@never_cache
@login_not_required
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@login_not_required
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _check_database(), "nats": _check_nats(ports_of(request).broker)}
    failed = sorted(name for name, result in checks.items() if result not in {"ok", "not configured"})
    body: dict[str, object] = {"status": "ok" if not failed else "unavailable", "checks": checks}
    if failed:
        body["failed"] = failed
    return JsonResponse(body, status=503 if failed else 200)


def _check_database() -> str:
    """One indexed row of a small table Neutrino's migrations create: fails until they have run."""
    try:
        Pool.objects.only("id").exists()
    except DatabaseError as exc:
        return f"error: {type(exc).__name__}: {exc}"
    return "ok"


def _check_nats(broker: Broker | None) -> str:
    if broker is None:
        return "not configured"
    if not broker.connected:
        return f"error: not connected to NATS at {broker.url}"
    return "ok"
