"""`GET /tasks/<id>/logs?attempt=N`: what an attempt of a task wrote.

JSON lines by default (`application/x-ndjson`), one object a line, oldest first:
`{"ts": 1733140800.123, "level": "INFO", "stream": "stdout", "text": "..."}`; with `?format=text`, plain
text, a line a record (`2026-12-02T12:00:00.123Z INFO stdout ...`). Headers say which attempt it is
(`X-Neutrino-Attempt`), which attempts have a log (`X-Neutrino-Log-Attempts`) and what the cap left out
(`X-Neutrino-Log-Dropped-Bytes`; the last line then says so too). The same owner rule as `GET /tasks/<id>`.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from ninja import Router

from tasks_app.api.auth import api_auth, request_caller
from tasks_app.api.routes import COMMON, ErrorOut, parse_task_id
from tasks_app.core.errors import InvalidArguments
from tasks_app.core.ports import ports_of
from tasks_app.selectors.logs import render_log, task_log, task_log_attempts
from tasks_app.selectors.tasks import LEDGER_GRACE_S, task_get

logs_router = Router(tags=["polling"], auth=api_auth)

FORMATS = ("jsonl", "text")


@logs_router.get("/{task_id}/logs", response={200: None, **COMMON, 404: ErrorOut, 422: ErrorOut},
                 summary="The log of one attempt of a task")
def get_task_logs(request: HttpRequest, task_id: str, attempt: int | None = None,
                  format: str = "jsonl") -> HttpResponse:
    """`attempt` defaults to the task's latest; `format` is `jsonl` (JSON lines) or `text`."""
    if format not in FORMATS:
        raise InvalidArguments(f"format must be one of {', '.join(FORMATS)}", field="format")
    task = task_get(task_id=parse_task_id(task_id), ledger=ports_of(request).ledger, grace_s=LEDGER_GRACE_S,
                    owner=request_caller(request).owner)
    latest = max(task.attempt, 1)
    if attempt is None:
        attempt = latest
    elif not 1 <= attempt <= latest:
        raise InvalidArguments(f"attempt must be between 1 and {latest} for task {task.id}", field="attempt")
    log = task_log(task_id=task.id, attempt=attempt)
    response = HttpResponse(render_log(log, format=format),
                            content_type="text/plain; charset=utf-8" if format == "text" else "application/x-ndjson")
    response["X-Neutrino-Attempt"] = str(attempt)
    response["X-Neutrino-Log-Attempts"] = ",".join(str(n) for n in task_log_attempts(task_id=task.id))
    response["X-Neutrino-Log-Dropped-Bytes"] = str(log.dropped_bytes)
    return response

