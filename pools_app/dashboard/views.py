"""The dashboard's pool screens: the live workers, and the pools with their workers and queue depth.

These two only read; creating, editing and deleting pools, and each pool's live view, are in
`pools_app.dashboard.manage`.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from pools_app.models import Pool, PoolMode
from pools_app.selectors import LOST_AFTER_BEATS, worker_states
from tasks_app.core.conf import neutrino_settings
from tasks_app.core.ports import ports_of
from tasks_app.dashboard.views import wants_partial
from tasks_app.selectors.dashboard import pool_depths


@require_GET
def workers_view(request: HttpRequest) -> HttpResponse:
    heartbeat_s = neutrino_settings().heartbeat_s
    states = worker_states(now=timezone.now(), heartbeat_s=heartbeat_s)
    context = {
        "workers": states,
        "heartbeat_s": heartbeat_s,
        "lost_after_s": LOST_AFTER_BEATS * heartbeat_s,
        "live_count": sum(1 for s in states if s.state == "live"),
        "refresh_s": max(1, round(heartbeat_s)),
    }
    template = "pools_app/_workers.html" if wants_partial(request, "workers-live") else "pools_app/workers.html"
    return render(request, template, context)


@require_GET
def pools_view(request: HttpRequest) -> HttpResponse:
    heartbeat_s = neutrino_settings().heartbeat_s
    pools = list(Pool.objects.order_by("name"))
    states = worker_states(now=timezone.now(), heartbeat_s=heartbeat_s)
    nats_pools = [p.name for p in pools if p.mode == PoolMode.NATS and p.enabled]
    depths = pool_depths(broker=ports_of(request).broker, pools=nats_pools)
    rows = []
    for pool in pools:
        workers = [s for s in states if s.worker.pool == pool.name]
        is_queued = pool.mode == PoolMode.NATS and pool.enabled
        rows.append({
            "pool": pool,
            "workers": workers,
            "live": sum(1 for s in workers if s.state == "live"),
            "queued": is_queued,
            "depth": depths.get(pool.name) if (is_queued and depths is not None) else None,
        })
    return render(request, "pools_app/pools.html", {"rows": rows, "depth_known": depths is not None})
