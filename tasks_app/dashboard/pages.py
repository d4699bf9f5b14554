"""What each task screen shows, as template contexts, and the live updates the websocket sends.

The views render these contexts as whole pages (or the partial htmx asks for); the websocket
consumer renders the same partials as htmx out-of-band swaps, so a row looks the same whether it
came with the page or over the socket.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpRequest
from django.http.request import split_domain_port
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from neutrino.app import EXECUTION_MODES
from tasks_app.core.conf import neutrino_settings
from tasks_app.core.ports import ports_of
from tasks_app.models import ACTIVE_STATUSES, Task, TaskStatus
from tasks_app.selectors.dashboard import (
    TIME_RANGES,
    ListQuery,
    list_query_from_params,
    task_function_names,
    task_page,
    task_status_counts,
    task_story,
    task_touched,
    tasks_touch_filters,
)
from tasks_app.selectors.logs import task_log, task_log_attempts
from workers.engine import tracing

WS_PATH = "/ws/dashboard/"
# A batch with more changed tasks than this re-renders without asking which of them matter.
RELEVANCE_CHECK_MAX = 500


def live_url(request: HttpRequest, params: dict[str, str]) -> str | None:
    """The websocket URL a page connects to for its live updates, or None when live updates are off.

    NEUTRINO_WS_URL when set (a proxy's URL, or a path on this host and port); else this host on
    NEUTRINO_WS_PORT, the ASGI process `neutrino serve` starts beside the HTTP server.
    """
    conf = neutrino_settings()
    query = "?" + urlencode(params)
    if conf.ws_url:
        return conf.ws_url + query
    if not conf.ws_port:
        return None
    host, _ = split_domain_port(request.get_host())
    scheme = "wss" if request.is_secure() else "ws"
    return f"{scheme}://{host}:{conf.ws_port}{WS_PATH}{query}"


def _href(params: dict[str, str]) -> str:
    """A link to the task list with these parameters."""
    base = reverse("task_list")
    return f"{base}?{urlencode(params)}" if params else base


# --- task list ----------------------------------------------------------------------------------


def task_list_context(*, query: ListQuery, changed: Iterable[str] = ()) -> dict[str, Any]:
    """The list's rows, counters and pager (`changed`: ids to highlight, from a live update)."""
    page = task_page(query=query)
    current = query.params.get("status")
    status_counts = task_status_counts(filters=query.filters)
    counters = [
        {
            "status": count.status,
            "label": count.label,
            "active": count.status == current,
            "href": _href(query.with_params(status=None if count.status == current else count.status)),
        }
        for count in status_counts.counts
    ]
    return {
        "query": query,
        "params": query.params,
        "page": page,
        "counters": counters,
        "counted_newest": status_counts.scanned,
        "all_href": _href(query.with_params(status=None)),
        "newest_href": _href(query.filter_params) if query.cursor else None,
        "older_href": _href(query.with_params(cursor=page.next_cursor)) if page.next_cursor else None,
        "changed": {str(task_id) for task_id in changed},
    }


def task_list_page_context(request: HttpRequest, *, query: ListQuery) -> dict[str, Any]:
    """The whole list page: the list, the filter form's choices and the live URL."""
    return {
        **task_list_context(query=query),
        "statuses": TaskStatus.values,
        "modes": list(EXECUTION_MODES),
        "pools": ports_of(request).pools.names(),
        "functions": task_function_names(),
        "time_ranges": [(key, label) for key, (label, _) in TIME_RANGES.items()],
        "ws_url": live_url(request, {"view": "list", **query.params}),
        # "Select all matching" (tasks_app.dashboard.bulk), for those who may cancel, retry or delete.
        "bulk_href": (reverse("bulk_new") + ("?" + urlencode(query.filter_params) if query.filter_params else ""))
        if any(request.user.has_perm(f"tasks_app.{verb}_task") for verb in ("cancel", "retry", "delete")) else None,
    }


# --- task detail --------------------------------------------------------------------------------


def task_detail_context(*, task: Task, user: Any, changed: Iterable[str] = ()) -> dict[str, Any]:
    # The buttons follow the permissions the views check (tasks_app.dashboard.views.require_permission).
    return {
        "story": task_story(task=task),
        "task": task,
        "can_cancel": user.has_perm("tasks_app.cancel_task") and task.status in ACTIVE_STATUSES,
        "can_retry": user.has_perm("tasks_app.retry_task"),
        # Queueing a delayed task early makes work happen now, as a retry does: the same permission.
        "can_run_now": user.has_perm("tasks_app.retry_task") and task.status == TaskStatus.SCHEDULED,
        "changed": {str(task_id) for task_id in changed},
        "trace_url": task_trace_url(task=task),
    }


def task_trace_url(*, task: Task) -> str:
    """The task's trace in the tracing UI that NEUTRINO_TRACE_URL_TEMPLATE names; "" when there is none."""
    template = neutrino_settings().trace_url_template
    trace_id = tracing.trace_id_of(task.traceparent) if template else ""
    return template.replace("{trace_id}", trace_id) if trace_id else ""


def task_log_context(*, task: Task, attempt: str | None) -> dict[str, Any]:
    """The log card of the task page: one attempt's lines (`?attempt=`, else the latest)."""
    latest = max(task.attempt, 1)
    try:
        chosen = min(max(int(attempt or latest), 1), latest)
    except ValueError:
        chosen = latest
    return {"log": task_log(task_id=task.id, attempt=chosen),
            "log_attempts": sorted(set(task_log_attempts(task_id=task.id)) | {chosen})}


# --- live updates (rendered in the websocket process) -------------------------------------------


def live_log_tail(*, params: dict[str, str], after_seq: int) -> tuple[str | None, int]:
    """The lines of the page's attempt stored after chunk `after_seq`, as an htmx out-of-band append to the
    page's log, and the last chunk they came from (`params`: the task page's socket, with `log_attempt`)."""
    task_id = uuid.UUID(params.get("id", ""))
    log = task_log(task_id=task_id, attempt=int(params.get("log_attempt") or 1), after_seq=after_seq)
    if log.last_seq == after_seq:
        return None, after_seq
    # The cap's notice is the page's last line once: a later tail never repeats it.
    lines = log.lines[:-1] if log.dropped_bytes and after_seq and log.lines else log.lines
    return render_to_string("tasks_app/_log_tail.html", {"lines": lines}), log.last_seq


def _render_request(user: Any, csrf_secret: str | None) -> HttpRequest:
    """A stand-in request for rendering fragments over the socket: the user, and the page's CSRF
    secret (from the browser's cookie) so that the forms in a fragment carry a valid token."""
    request = HttpRequest()
    request.user = user
    request.META["SERVER_NAME"] = "websocket"
    if csrf_secret:
        request.META["CSRF_COOKIE"] = csrf_secret
    return request


def live_update(*, params: dict[str, str], changed: list[str] | None, user: Any,
                csrf_secret: str | None = None) -> str | None:
    """The htmx out-of-band swaps for one batch of changed tasks, or None when none of them shows.

    `params` are the websocket's query parameters (`view=list` plus the list's URL parameters, or
    `view=task&id=...`); `changed` None means "send the current state" (on connect).
    Raises ValueError for parameters that name no view.
    """
    request = _render_request(user, csrf_secret)
    if params.get("view") == "list":
        query = list_query_from_params(params, now=timezone.now())
        if changed is not None and len(changed) <= RELEVANCE_CHECK_MAX and not tasks_touch_filters(
            task_ids=changed, filters=query.filters
        ):
            return None
        context = {**task_list_context(query=query, changed=changed or ()), "oob": True}
        return render_to_string("tasks_app/_task_list_update.html", context, request=request)
    if params.get("view") == "task":
        task_id = uuid.UUID(params.get("id", ""))
        if changed is not None and len(changed) <= RELEVANCE_CHECK_MAX and not task_touched(
            task_id=task_id, task_ids=changed
        ):
            return None
        task = Task.objects.filter(id=task_id).first()
        if task is None:
            return None
        context = {**task_detail_context(task=task, user=user, changed=changed or ()), "oob": True}
        return render_to_string("tasks_app/_task_live.html", context, request=request)
    raise ValueError(f"unknown live view {params.get('view')!r}")


def detail_url(task_id: uuid.UUID | str) -> str:
    return reverse("task_detail", args=[task_id])


def csrf_cookie_name() -> str:
    return str(settings.CSRF_COOKIE_NAME)
