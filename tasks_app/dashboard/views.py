"""The dashboard's task screens. One view per screen: the whole page, or the partial htmx asks for.

Thin: parse the request, call a selector or a service, render. Live updates come over the
websocket (tasks_app.dashboard.consumers), not from these views.
"""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_POST

from tasks_app.core.errors import GroupNotFound, NeutrinoError, TaskNotFound
from tasks_app.core.ports import ports_of
from tasks_app.dashboard.charts import minute_chart
from tasks_app.dashboard.family import task_family_context
from tasks_app.dashboard.pages import (
    detail_url,
    live_url,
    task_detail_context,
    task_list_page_context,
    task_log_context,
)
from tasks_app.models import Task, TaskCreator
from tasks_app.selectors.dashboard import list_query_from_params, pool_depths, task_overview
from tasks_app.selectors.groups import group_get
from tasks_app.selectors.logs import render_log
from tasks_app.selectors.results import INLINE_IMAGE_TYPES, download_response, task_result_download
from tasks_app.selectors.retention import retention_overview
from tasks_app.selectors.tasks import LEDGER_GRACE_S, task_get
from tasks_app.services import tasks as services
from tasks_app.services.audit import actor_of_request
from tasks_app.services.delays import task_run_now
from tasks_app.services.groups import group_cancel
from tasks_app.services.retry import task_retry

# Pages drawn from heartbeats and aggregates redraw themselves on a timer (the task pages follow events).
OVERVIEW_REFRESH_S = 10


def wants_partial(request: HttpRequest, target: str) -> bool:
    """An htmx request that swaps `#target` (not a history restore, which needs the whole page)."""
    htmx = getattr(request, "htmx", None)
    if not htmx:
        return False
    return not htmx.history_restore_request and htmx.target == target


def _vary_on_htmx(response: HttpResponse) -> HttpResponse:
    patch_vary_headers(response, ("HX-Request", "HX-Target"))
    return response


@require_GET
def task_list_view(request: HttpRequest) -> HttpResponse:
    query = list_query_from_params(request.GET, now=timezone.now())
    context = task_list_page_context(request, query=query)
    template = "tasks_app/_task_list.html" if wants_partial(request, "task-list") else "tasks_app/task_list.html"
    return _vary_on_htmx(render(request, template, context))


def _task_or_404(request: HttpRequest, task_id: uuid.UUID) -> Task:
    try:
        # A sync task that just answered may still sit in a ledger writer's batch: wait a moment.
        return task_get(task_id=task_id, ledger=ports_of(request).ledger, grace_s=LEDGER_GRACE_S)
    except TaskNotFound:
        raise Http404(f"no task with id {task_id}")


@require_GET
def task_detail_view(request: HttpRequest, task_id: uuid.UUID) -> HttpResponse:
    task = _task_or_404(request, task_id)
    log = task_log_context(task=task, attempt=request.GET.get("attempt"))
    context = {
        **task_detail_context(task=task, user=request.user),
        **task_family_context(task=task, children_page=request.GET.get("children_page"), user=request.user),
        **log,
        "ws_url": live_url(request, {"view": "task", "id": str(task_id), "log_attempt": str(log["log"].attempt),
                                     "log_seq": str(log["log"].last_seq)}),
    }
    template = "tasks_app/_task_live.html" if wants_partial(request, "task-live") else "tasks_app/task_detail.html"
    return _vary_on_htmx(render(request, template, context))


@require_GET
def task_result_download_view(request: HttpRequest, task_id: uuid.UUID) -> HttpResponseBase:
    """[objects] The task's result as a download (`?inline=1`: shown in the page, for raster images only:
    an SVG or HTML result shown inline would run its scripts on the dashboard's origin)."""
    task = _task_or_404(request, task_id)
    download = task_result_download(task=task, broker=ports_of(request).broker)
    inline = request.GET.get("inline") == "1" and download.content_type in INLINE_IMAGE_TYPES
    return download_response(download, inline=inline)


@require_GET
def task_log_download_view(request: HttpRequest, task_id: uuid.UUID) -> HttpResponse:
    """One attempt's log as plain text, a line a record (the same text as `GET /tasks/<id>/logs?format=text`)."""
    task = _task_or_404(request, task_id)
    log = task_log_context(task=task, attempt=request.GET.get("attempt"))["log"]
    response = HttpResponse(render_log(log, format="text"), content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{task.function_name}-{task.id}-attempt-{log.attempt}.log"'
    return response


def require_permission(request: HttpRequest, permission: str, *, to: str) -> None:
    """Refuse (403) a user without the Django model permission `permission` ("app_label.codename"),
    saying what it allows. Being staff is not enough: an admin grants the permission (directly or
    through a group) in the Django admin; a superuser has them all."""
    if not request.user.has_perm(permission):
        raise PermissionDenied(f"you need the permission {permission} to {to}; an admin grants it in the Django admin")


@require_POST
def task_cancel_view(request: HttpRequest, task_id: uuid.UUID) -> HttpResponse:
    require_permission(request, "tasks_app.cancel_task", to="cancel tasks")
    try:
        task = services.task_cancel(ports=ports_of(request), task_id=task_id, actor=actor_of_request(request))
    except TaskNotFound:
        raise Http404(f"no task with id {task_id}")
    except NeutrinoError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Task {task.id} is {task.status}.")
    return HttpResponseRedirect(detail_url(task_id))


@require_POST
def group_cancel_view(request: HttpRequest, group_id: uuid.UUID) -> HttpResponse:
    """Cancel a group's unfinished tasks (its callback ends cancelled, unrun); back to the page it was asked on."""
    require_permission(request, "tasks_app.cancel_task", to="cancel tasks")
    try:
        group = group_get(group_id=group_id)
    except GroupNotFound:
        raise Http404(f"no group with id {group_id}")
    cancelled = group_cancel(ports=ports_of(request), group=group)
    messages.success(request, f"Group {group.id}: {cancelled} unfinished task(s) cancelled; its callback will not run.")
    back = request.POST.get("next") or ""
    return HttpResponseRedirect(back if back.startswith("/ui/") else reverse("task_list"))


@require_POST
def task_retry_view(request: HttpRequest, task_id: uuid.UUID) -> HttpResponse:
    require_permission(request, "tasks_app.retry_task", to="retry tasks")
    creator = TaskCreator(label=f"user:{request.user.get_username()}")
    try:
        retry = task_retry(ports=ports_of(request), task_id=task_id, key=None, creator=creator,
                           actor=actor_of_request(request))
    except TaskNotFound as exc:
        if "task" in exc.details:  # the function is not registered here
            messages.error(request, exc.message)
            return HttpResponseRedirect(detail_url(task_id))
        raise Http404(f"no task with id {task_id}")
    except NeutrinoError as exc:
        messages.error(request, exc.message)
        return HttpResponseRedirect(detail_url(task_id))
    messages.success(request, f"Retry of {task_id} started as task {retry.task_id} ({retry.status}).")
    return HttpResponseRedirect(detail_url(retry.task_id))


@require_POST
def task_run_now_view(request: HttpRequest, task_id: uuid.UUID) -> HttpResponse:
    require_permission(request, "tasks_app.retry_task", to="run scheduled tasks now")
    try:
        task = task_run_now(ports=ports_of(request), task_id=task_id, actor=actor_of_request(request))
    except TaskNotFound:
        raise Http404(f"no task with id {task_id}")
    except NeutrinoError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Task {task.id} is {task.status}: it runs now instead of at its run_at.")
    return HttpResponseRedirect(detail_url(task_id))


@require_GET
def overview_view(request: HttpRequest) -> HttpResponse:
    overview = task_overview(now=timezone.now())
    ports = ports_of(request)
    pools = ports.pools.queued_names()
    depths = pool_depths(broker=ports.broker, pools=pools)
    context = {
        "overview": overview,
        "chart": minute_chart(overview.buckets),
        "depths": [(pool, None if depths is None else depths.get(pool)) for pool in pools],
        "depth_known": depths is not None,
        "refresh_s": OVERVIEW_REFRESH_S,
        "retention": retention_overview(),
    }
    template = "tasks_app/_overview.html" if wants_partial(request, "overview") else "tasks_app/overview.html"
    return _vary_on_htmx(render(request, template, context))
