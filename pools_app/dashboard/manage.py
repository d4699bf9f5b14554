"""The dashboard's pool management and each pool's live view.

Each change needs its Django model permission, not just staff status: `pools_app.add_pool` to create,
`pools_app.change_pool` to edit, enable, disable, drain or undrain, `pools_app.delete_pool` to delete
(granted in the Django admin; a superuser has them all). The buttons show only to those who have them.

- `ui/pools/new`, `ui/pools/<name>/edit`: the pool form (`pools_app.forms.PoolForm`), each bad value
  reported next to its field;
- `ui/pools/<name>/<action>` (POST): enable, disable, drain, undrain, delete; deleting a pool with
  tasks pending, queued or running is refused with the count;
- `ui/pools/<name>`: backlog, in flight, oldest waiting age, workers and their state, replicas wanted
  and running, and the last hour of backlog against replicas. htmx refreshes the live part every few
  seconds (`#pool-live`).

A change takes effect without a restart (`pools_app.services`): the stream and the pool's consumer
are updated after the commit, submits see the pool within the gateway's 2 s pools cache, and workers
follow through the autoscaler. Thin: forms, services and selectors do the work.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from pools_app.dashboard.charts import scaling_chart
from pools_app.forms import PoolForm
from pools_app.models import Pool, PoolMode
from pools_app.selectors import pool_live
from pools_app.services import pool_delete, pool_save, pool_set_draining, pool_set_enabled
from tasks_app.core.conf import neutrino_settings
from tasks_app.core.errors import NeutrinoError
from tasks_app.core.ports import ports_of
from tasks_app.dashboard.views import require_permission, wants_partial
from tasks_app.selectors.dashboard import pool_depths
from tasks_app.services.audit import actor_of_request

HISTORY = timedelta(hours=1)
REFRESH_S = 3


def _pool_or_404(name: str) -> Pool:
    pool = Pool.objects.filter(name=name).first()
    if pool is None:
        raise Http404(f"no pool named {name}")
    return pool


def _detail(pool: Pool) -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse("pool_detail", args=[pool.name]))


@require_http_methods(["GET", "POST"])
def pool_new_view(request: HttpRequest) -> HttpResponse:
    require_permission(request, "pools_app.add_pool", to="create pools")
    form = PoolForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        pool = pool_save(broker=ports_of(request).broker, pool=form.instance, actor=actor_of_request(request))
        messages.success(request, f"Pool {pool.name} created. Tasks declared with pool=\"{pool.name}\" can run now "
                                  "(servers see it within 2 s); workers start when its tasks wait.")
        return _detail(pool)
    return render(request, "pools_app/pool_form.html", {"form": form, "pool": None})


@require_http_methods(["GET", "POST"])
def pool_edit_view(request: HttpRequest, name: str) -> HttpResponse:
    require_permission(request, "pools_app.change_pool", to="change pools")
    pool = _pool_or_404(name)
    form = PoolForm(request.POST or None, instance=pool)
    if request.method == "POST" and form.is_valid():
        pool_save(broker=ports_of(request).broker, pool=form.instance, actor=actor_of_request(request))
        messages.success(request, f"Pool {pool.name} saved; it takes effect without a restart.")
        return _detail(pool)
    return render(request, "pools_app/pool_form.html", {"form": form, "pool": pool})


ACTIONS: dict[str, tuple[Callable[..., Pool], str]] = {
    "enable": (functools.partial(pool_set_enabled, enabled=True), "is enabled"),
    "disable": (functools.partial(pool_set_enabled, enabled=False),
                "is disabled: new tasks answer 503 and its workers stop (they finish or hand back what they run)"),
    "drain": (functools.partial(pool_set_draining, draining=True),
              "is draining: new tasks answer 503, its workers finish the waiting ones; delete it once it is empty"),
    "undrain": (functools.partial(pool_set_draining, draining=False), "takes new tasks again"),
}


@require_POST
def pool_action_view(request: HttpRequest, name: str, action: str) -> HttpResponse:
    if action == "delete":
        require_permission(request, "pools_app.delete_pool", to="delete pools")
    else:
        require_permission(request, "pools_app.change_pool", to=f"{action} pools")
    pool = _pool_or_404(name)
    if action == "delete":
        try:
            pool_delete(broker=ports_of(request).broker, pool=pool, actor=actor_of_request(request))
        except NeutrinoError as exc:
            messages.error(request, f"Not deleted: {exc.message}.")
            return _detail(pool)
        messages.success(request, f"Pool {name} deleted. Tasks that name it answer 503 until it exists again.")
        return HttpResponseRedirect(reverse("pools"))
    if action not in ACTIONS:
        raise Http404(f"no pool action {action!r}")
    change, said = ACTIONS[action]
    try:
        change(broker=ports_of(request).broker, pool=pool, actor=actor_of_request(request))
    except NeutrinoError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Pool {name} {said}.")
    return _detail(pool)


def pool_detail_view(request: HttpRequest, name: str) -> HttpResponse:
    if request.method != "GET":
        return HttpResponse(status=405)
    pool = _pool_or_404(name)
    now = timezone.now()
    depth = None
    if pool.mode == PoolMode.NATS:
        depths = pool_depths(broker=ports_of(request).broker, pools=[pool.name])
        found = None if depths is None else depths.get(pool.name)
        depth = None if found is None else (found.pending, found.in_flight)
    live = pool_live(pool=pool, now=now, heartbeat_s=neutrino_settings().heartbeat_s, depth=depth,
                     history_for=HISTORY)
    context = {
        "live": live,
        "pool": pool,
        "chart": scaling_chart(live.history, since=now - HISTORY, until=now),
        "refresh_s": REFRESH_S,
        "can_change": request.user.has_perm("pools_app.change_pool"),
        "can_delete": request.user.has_perm("pools_app.delete_pool"),
    }
    template = "pools_app/_pool_live.html" if wants_partial(request, "pool-live") else "pools_app/pool_detail.html"
    response = render(request, template, context)
    response["Vary"] = "HX-Request, HX-Target"
    return response
