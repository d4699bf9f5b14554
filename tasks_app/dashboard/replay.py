"""The dashboard's "Retry with changes": a task's arguments, timeout and pool in an editor, checked against
the task's signature while the operator types (`retry_check_view`), then sent as a retry with changes
(`tasks_app.services.retry.task_retry`), whose new task records what changed."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.http import require_http_methods, require_POST

from tasks_app.core.errors import InvalidArguments, NeutrinoError, TaskNotFound
from tasks_app.core.ports import ports_of
from tasks_app.core.registry import registered_tasks
from tasks_app.dashboard.pages import detail_url
from tasks_app.dashboard.views import require_permission
from tasks_app.models import Task, TaskCreator
from tasks_app.services.audit import actor_of_request
from tasks_app.services.retry import RetryChanges, task_retry, task_retry_preview


def changes_from_form(data: Any) -> RetryChanges:
    """The editor's fields as changes. Raises InvalidArguments naming a field that is not JSON or a number."""
    try:
        args = json.loads(data.get("args") or "{}")
    except json.JSONDecodeError as exc:
        raise InvalidArguments(f"the arguments are not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
                               field="args") from None
    if not isinstance(args, dict):
        raise InvalidArguments('the arguments must be a JSON object of named arguments, like {"a": 1}', field="args")
    raw_timeout = (data.get("timeout_ms") or "").strip()
    if raw_timeout and not raw_timeout.isdigit():
        raise InvalidArguments("timeout_ms must be a whole number of milliseconds", field="options.timeout_ms")
    return RetryChanges(args=args, timeout_ms=int(raw_timeout) if raw_timeout else None,
                        pool=(data.get("pool") or "").strip() or None)


def _task_or_404(task_id: uuid.UUID) -> Task:
    task = Task.objects.filter(id=task_id).first()
    if task is None:
        raise Http404(f"no task with id {task_id}")
    return task


def _editor_context(request: HttpRequest, task: Task, *, form: Any = None, error: NeutrinoError | None = None,
                    changes: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = registered_tasks().get(task.function_name)
    queued = task.execution_mode != "sync"
    return {
        "task": task,
        "args_text": form.get("args") if form is not None else json.dumps(task.args, indent=2, sort_keys=True),
        "timeout_ms": form.get("timeout_ms") if form is not None else task.timeout_ms,
        "pool": form.get("pool") if form is not None else task.pool,
        "pools": sorted({*ports_of(request).pools.queued_names(), task.pool}) if queued else [],
        "schema": json.dumps(spec.args_model.model_json_schema(), indent=2) if spec is not None else "",
        "registered": spec is not None,
        "error": error,
        "changes": changes,
    }


@require_http_methods(["GET", "POST"])
def retry_edit_view(request: HttpRequest, task_id: uuid.UUID) -> HttpResponse:
    """GET: the editor, filled with the task's arguments. POST: the retry with the edited values."""
    require_permission(request, "tasks_app.retry_task", to="retry tasks")
    task = _task_or_404(task_id)
    if request.method == "GET":
        return render(request, "tasks_app/retry_edit.html", _editor_context(request, task))
    creator = TaskCreator(label=f"user:{request.user.get_username()}")
    try:
        retry = task_retry(ports=ports_of(request), task_id=task_id, key=None, creator=creator,
                           changes=changes_from_form(request.POST), actor=actor_of_request(request))
    except TaskNotFound as exc:
        if "task" not in exc.details:
            raise Http404(f"no task with id {task_id}")
        messages.error(request, exc.message)
        return HttpResponseRedirect(detail_url(task_id))
    except NeutrinoError as exc:
        context = _editor_context(request, task, form=request.POST, error=exc)
        return render(request, "tasks_app/retry_edit.html", context,
                      status=422 if isinstance(exc, InvalidArguments) else 409)
    what = ", ".join(retry.changes) if retry.changes else "nothing changed"
    messages.success(request, f"Retry of {task_id} started as task {retry.task_id} ({retry.status}; {what}).")
    return HttpResponseRedirect(detail_url(retry.task_id))


@require_POST
def retry_check_view(request: HttpRequest, task_id: uuid.UUID) -> HttpResponse:
    """The editor's verdict while the operator types: what is wrong, or what the retry would change."""
    require_permission(request, "tasks_app.retry_task", to="retry tasks")
    task = _task_or_404(task_id)
    error: NeutrinoError | None = None
    changes = None
    try:
        changes = task_retry_preview(ports=ports_of(request), task_id=task_id, changes=changes_from_form(request.POST))
    except (InvalidArguments, TaskNotFound) as exc:
        error = exc
    return render(request, "tasks_app/_retry_check.html", _editor_context(request, task, form=request.POST,
                                                                           error=error, changes=changes))
