"""The dashboard's bulk actions.

Bulk (from the task list, with its filters): "Select all N matching" (`ui/bulk/new?<list filters>`) fixes the
filter (its time range as absolute times, and "created before now", so tasks submitted meanwhile are not
swept in) and shows the exact count with the actions the user may take; choosing one shows the confirmation
with the count again; confirming (`POST ui/bulk`) writes the action for the scheduler and answers with its
progress, which htmx polls every second (`ui/bulk/<id>`) until it ends. Stop: `POST ui/bulk/<id>/stop`.
A changed count since the confirmation is shown again to confirm (409 in the API).

Permissions: cancel_task, retry_task and delete_task (Django's own) for the three actions. Thin: selectors
and services do the work.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from tasks_app.core.errors import Conflict, InvalidArguments, TaskNotFound
from tasks_app.dashboard.views import require_permission, wants_partial
from tasks_app.models import BulkAction
from tasks_app.operator_models import BulkActionKind
from tasks_app.selectors.bulk import bulk_count, bulk_get, filter_from_json, filter_to_json
from tasks_app.selectors.dashboard import list_query_from_params
from tasks_app.selectors.tasks import TaskFilters
from tasks_app.services.audit import actor_of_request
from tasks_app.services.bulk import bulk_create, bulk_stop

PERMISSIONS: dict[str, str] = {BulkActionKind.CANCEL: "tasks_app.cancel_task",
                               BulkActionKind.RETRY: "tasks_app.retry_task",
                               BulkActionKind.DELETE: "tasks_app.delete_task"}
VERBS: dict[str, str] = {BulkActionKind.CANCEL: "Cancel", BulkActionKind.RETRY: "Retry",
                         BulkActionKind.DELETE: "Delete"}
POLL_S = 1


def allowed_actions(user: Any) -> list[str]:
    return [action for action, permission in PERMISSIONS.items() if user.has_perm(permission)]


def _require(request: HttpRequest, action: str) -> None:
    if action not in PERMISSIONS:
        raise Http404(f"no bulk action {action!r}")
    require_permission(request, PERMISSIONS[action], to=f"{action} tasks in bulk")


def describe_filter(raw: dict[str, str]) -> str:
    """The filter in words, for the confirmation ("every task" without one)."""
    return ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in raw.items()) or "every task"


def _filters_from_post(request: HttpRequest) -> TaskFilters:
    try:
        return filter_from_json(json.loads(request.POST.get("filter") or "{}"))
    except (ValueError, InvalidArguments):
        raise Http404("the bulk filter is not valid; select the tasks again from the task list")


def _panel(request: HttpRequest, *, filters: TaskFilters, action: str = "", notice: str = "") -> HttpResponse:
    raw = filter_to_json(filters)
    encoded = json.dumps(raw, separators=(",", ":"))
    context = {
        "count": bulk_count(filters=filters, snapshot_at=timezone.now()),
        "filter_json": encoded,
        "filter_text": describe_filter(raw),
        "action": action,
        "verb": VERBS.get(action, ""),
        "choices": [(a, VERBS[a], reverse("bulk_new") + "?" + urlencode({"filter": encoded, "action": a}))
                    for a in allowed_actions(request.user)],
        "notice": notice,
    }
    return render(request, "tasks_app/_bulk_panel.html", context)


@require_GET
def bulk_new_view(request: HttpRequest) -> HttpResponse:
    """Step one (the list's filters): the exact count and the actions; step two (`filter` + `action`): the
    confirmation."""
    if not allowed_actions(request.user):
        raise PermissionDenied("you need the permission to cancel, retry or delete tasks for bulk actions; "
                               "an admin grants it in the Django admin")
    action = request.GET.get("action", "")
    if action:
        _require(request, action)
    if "filter" in request.GET:
        try:
            filters = filter_from_json(json.loads(request.GET["filter"]))
        except (ValueError, InvalidArguments):
            raise Http404("the bulk filter is not valid; select the tasks again from the task list")
    else:
        now = timezone.now()
        filters = replace(list_query_from_params(request.GET, now=now).filters, owner=None)
        if filters.created_before is None or filters.created_before > now:
            filters = replace(filters, created_before=now)  # what is submitted from now on is not swept in
    return _panel(request, filters=filters, action=action)


@require_POST
def bulk_create_view(request: HttpRequest) -> HttpResponse:
    action = request.POST.get("action", "")
    _require(request, action)
    filters = _filters_from_post(request)
    try:
        expected = int(request.POST.get("expected_count", ""))
    except ValueError:
        raise Http404("the confirmation carries no count; select the tasks again")
    try:
        bulk = bulk_create(filters=filters, action=action, expected_count=expected, actor=actor_of_request(request))
    except Conflict as exc:
        return _panel(request, filters=filters, action=action, notice=exc.message)
    if not getattr(request, "htmx", None):
        return HttpResponseRedirect(reverse("bulk_detail", args=[bulk.id]))
    return render(request, "tasks_app/_bulk_progress.html", _progress_context(request, bulk))


def _progress_context(request: HttpRequest, bulk: BulkAction) -> dict[str, Any]:
    return {
        "bulk": bulk,
        "verb": VERBS.get(bulk.action, bulk.action),
        "filter_text": describe_filter(dict(bulk.filter)),
        "can_stop": not bulk.finished and request.user.has_perm(PERMISSIONS.get(bulk.action, "")),
        "poll_s": POLL_S,
    }


def _bulk_or_404(bulk_id: uuid.UUID) -> BulkAction:
    try:
        return bulk_get(bulk_id=bulk_id)
    except TaskNotFound:
        raise Http404(f"no bulk action {bulk_id}")


@require_GET
def bulk_detail_view(request: HttpRequest, bulk_id: uuid.UUID) -> HttpResponse:
    context = _progress_context(request, _bulk_or_404(bulk_id))
    template = "tasks_app/_bulk_progress.html" if wants_partial(request, "bulk-progress") else "tasks_app/bulk.html"
    response = render(request, template, context)
    response["Vary"] = "HX-Request, HX-Target"
    return response


@require_POST
def bulk_stop_view(request: HttpRequest, bulk_id: uuid.UUID) -> HttpResponse:
    bulk = _bulk_or_404(bulk_id)
    _require(request, bulk.action)
    bulk = bulk_stop(bulk_id=bulk_id, actor=actor_of_request(request))
    if not getattr(request, "htmx", None):
        return HttpResponseRedirect(reverse("bulk_detail", args=[bulk_id]))
    return render(request, "tasks_app/_bulk_progress.html", _progress_context(request, bulk))
