"""The gateway (`POST /api/<task>`, `POST /api/<task>/batch`) and polling (`/tasks`) APIs.

Thin: parse, call a service, answer. Both routers authenticate with `tasks_app.api.auth.api_auth`
(browser requests from other sites and non-JSON bodies refused, then bearer tokens, anonymous where
allowed, the rate limit); submits honour `Idempotency-Key`.
Each task records its caller as its creator; a caller that is not an admin token reads, cancels and
retries only its own tasks (others' answer 404), and a token limited to some tasks calls only those (403).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, HttpResponse
from ninja import Field, Query, Router, Schema, Status

from neutrino.app import TaskSpec
from tasks_app.api import upstream
from tasks_app.api.auth import api_auth, request_caller
from tasks_app.api.browsers import require_json
from tasks_app.api.long_polls import wait_slots
from tasks_app.core.conf import neutrino_settings
from tasks_app.core.errors import BadRequest, InvalidArguments, PayloadTooLarge, TaskNotFound
from tasks_app.core.payloads import loads_strict
from tasks_app.core.ports import ports_of
from tasks_app.core.registry import task_spec
from tasks_app.models import TaskCreator, TaskStatus
from tasks_app.selectors import results as result_selectors
from tasks_app.selectors import tasks as selectors
from tasks_app.services import delays, idempotency
from tasks_app.services import retry as retries
from tasks_app.services import submit as submissions
from tasks_app.services import tasks as services
from tasks_app.services.audit import actor_of_request
from tasks_app.services.flow import FLOW_FIELDS
from tasks_app.services.tasks import SyncOutcome
from tasks_app.services.timing import TIMING_FIELDS, Timing, submit_timing

gateway_router = Router(tags=["tasks"], auth=api_auth)
tasks_router = Router(tags=["polling"], auth=api_auth)


class ErrorOut(Schema):
    error: str
    message: str


class TaskOut(Schema):
    task_id: str
    function_name: str
    status: str
    pool: str
    execution_mode: str
    args: Any = None
    result: Any = None
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    attempt: int
    max_retries: int
    timeout_ms: int
    worker_id: str | None = None
    created_at: datetime
    queued_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    run_at: datetime | None = None  # a delayed task's time: `scheduled` until then
    expires_at: datetime | None = None  # not started by then: `expired`, never run
    duration_ms: float | None = None
    progress: float | None = None
    progress_message: str | None = None
    retry_of: str | None = None
    retry_changes: dict[str, Any] | None = None
    cancel_requested: bool
    created_by: str | None = None
    concurrency_key: str | None = None  # [limits] the key of a task with a concurrency limit
    parent_id: str | None = None  # the task that submitted this one
    group_id: str | None = None  # the group (GET /groups/<id>) this task is a member of
    priority: str = "normal"


class TaskPageOut(Schema):
    items: list[TaskOut]  # without args, result and traceback unless `?fields=` asks for them
    next_cursor: str | None


class TaskListQuery(Schema):
    status: str | None = Field(None, description="one of " + ", ".join(TaskStatus.values))
    function: str | None = None
    pool: str | None = None
    mode: str | None = None
    error_type: str | None = None
    error_contains: str | None = None  # any case
    limit: int = 50  # at most selectors.MAX_PAGE (100): a bigger limit gets 100 items and a next_cursor
    cursor: str | None = None
    fields: str | None = None  # "args,result,traceback", or some of them


class RetryOut(Schema):
    task_id: str
    status: str
    retry_of: str
    result: Any = None
    error: str | None = None
    changes: dict[str, Any] | None = None


class BatchItemOut(Schema):
    task_id: str
    status: str


class BatchOut(Schema):
    items: list[BatchItemOut]


# Every operation can answer these: a bad request, no or a wrong token, a cross-site browser request,
# a body that is not JSON, the rate limit.
COMMON = {400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 415: ErrorOut, 429: ErrorOut}
ERRORS = {**COMMON, 404: ErrorOut, 409: ErrorOut, 413: ErrorOut, 422: ErrorOut}
IDEMPOTENCY_HEADER = "Idempotency-Key"


def read_raw_body(request: HttpRequest) -> bytes:
    """The request's body, refusing oversized bodies before reading them."""
    limit = neutrino_settings().max_payload_bytes
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"request body is {int(declared)} bytes; the limit is {limit} bytes (NEUTRINO_MAX_PAYLOAD_BYTES)",
            limit=limit,
        )
    raw = request.body
    if len(raw) > limit:
        raise PayloadTooLarge(f"request body is over the {limit} byte limit", limit=limit)
    return raw


def read_json_body(request: HttpRequest) -> dict[str, Any]:
    """The request's JSON object (see `read_raw_body` for the size limit)."""
    raw = read_raw_body(request)
    if not raw.strip():
        return {}
    require_json(request)  # ApiAuth checked the declared body already; this covers any body it did not see
    body = loads_strict(raw)
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object like {"args": {...}}')
    return body


def parse_task_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise TaskNotFound(f"no task with id {raw!r}: task ids are UUIDs", task_id=raw)


def request_key(request: HttpRequest) -> str | None:
    """The request's Idempotency-Key, scoped to its caller (None without one)."""
    return idempotency.idempotency_key(scope=request_caller(request).scope,
                                       header=request.headers.get(IDEMPOTENCY_HEADER))


def sync_content(outcome: SyncOutcome) -> str:
    # The child already produced the result's JSON; splice it in rather than decode and re-encode.
    duration = "null" if outcome.duration_ms is None else f"{outcome.duration_ms:.3f}"
    return (f'{{"task_id":"{outcome.task_id}","status":"completed","result":{outcome.result_json},'
            f'"duration_ms":{duration}}}')


def json_response(body: Any, *, status: int, replayed: bool = False) -> HttpResponse:
    text = body if isinstance(body, str) else json.dumps(body, cls=DjangoJSONEncoder)
    response = HttpResponse(text, content_type="application/json", status=status)
    if replayed:
        response["Idempotent-Replayed"] = "true"
    return response


def call_answer(result: submissions.CallResult) -> HttpResponse:
    """A sync call's result (200), a new queued task (202), or a key's repeat of a queued one (200)."""
    if result.outcome is not None:
        return json_response(sync_content(result.outcome), status=200, replayed=result.replayed)
    task = result.task
    assert task is not None
    poll_url = f"/tasks/{task.id}"
    if result.deduplicated:
        # The first task may be another caller's: its id and state only, which its owner alone can poll.
        return json_response({"task_id": str(task.id), "status": task.status, "priority": task.priority,
                              "deduplicated": True, "poll_url": poll_url}, status=200)
    if result.replayed:
        return json_response({**selectors.task_as_dict(task), "poll_url": poll_url}, status=200, replayed=True)
    timing = {name: value for name, value in (("run_at", task.run_at), ("expires_at", task.expires_at)) if value}
    return json_response({"task_id": str(task.id), "status": task.status, **timing, "poll_url": poll_url},
                         status=202)


def read_timing(body: dict[str, Any], spec: TaskSpec) -> Timing:
    """The body's timing fields, checked (422 naming the field)."""
    return submit_timing(spec=spec, fields={name: body[name] for name in TIMING_FIELDS if name in body})


@gateway_router.post(
    "/{task_name}",
    response={200: dict, 202: dict, **ERRORS, 500: ErrorOut, 501: ErrorOut, 503: ErrorOut, 504: ErrorOut},
    summary="Run or queue a task",
    operation_id="call_task",
)
def call_task(request: HttpRequest, task_name: str) -> Any:
    caller = request_caller(request)
    caller.check_may_call(task_name)
    spec = task_spec(task_name)
    if not spec.runs_on_nats and neutrino_settings().sync_upstream:
        # A gateway in front of the fast pool: that pool validates, runs and records the call.
        return upstream.forward_sync_call(request=request, spec=spec, body=read_raw_body(request))
    if not spec.runs_on_nats:
        # A caller (or a gateway passing its caller's deadline on) may ask for a shorter timeout.
        timeout_ms = upstream.requested_timeout_ms(request, spec)
        if timeout_ms != spec.timeout_ms:
            spec = dataclasses.replace(spec, timeout_ms=timeout_ms)
    key = request_key(request)
    body = read_json_body(request)
    unknown = set(body) - {"args", "callback_url", "parent_id", *TIMING_FIELDS, *FLOW_FIELDS}
    if unknown:
        raise InvalidArguments(
            f"unknown field(s) {', '.join(sorted(unknown))} in the body; send {{\"args\": {{...}}}} and optionally "
            f"\"callback_url\" and, for a queued task, any of {', '.join((*TIMING_FIELDS, *FLOW_FIELDS))}",
            fields=[{"field": name, "message": "unknown field"} for name in sorted(unknown)],
        )
    result = submissions.task_call(ports=ports_of(request), spec=spec, args=body.get("args", {}), key=key,
                                   creator=caller.creator, timing=read_timing(body, spec),
                                   callback_url=body.get("callback_url"),
                                   parent_id=read_parent(body, caller.owner), priority=body.get("priority"),
                                   unique_for_s=body.get("unique_for_s"))
    if result.outcome is not None and wants_bytes(request):  # [objects] a stored sync result, streamed
        outcome = result.outcome
        download = result_selectors.sync_object_download(task_id=outcome.task_id, result_json=outcome.result_json,
                                                         broker=ports_of(request).broker)
        if download is not None:
            return result_selectors.download_response(download)
    return call_answer(result)


def wants_bytes(request: HttpRequest) -> bool:
    """[objects] The caller of a sync task asked for a stored result's bytes rather than its JSON reference:
    its Accept names a type and not JSON (`Accept: application/octet-stream`, `image/*`)."""
    accept = request.headers.get("Accept", "")
    return bool(accept) and "json" not in accept and accept.strip() != "*/*"


def read_parent(body: dict[str, Any], owner: TaskCreator | None) -> uuid.UUID | None:
    """The body's `parent_id`: a task the caller can see (422 naming the field otherwise), or None."""
    raw = body.get("parent_id")
    if raw is None:
        return None
    try:
        return selectors.task_get(task_id=uuid.UUID(str(raw)), owner=owner).id
    except (ValueError, TaskNotFound):
        raise InvalidArguments(f"parent_id {raw!r} names no task of yours", field="parent_id",
                               fields=[{"field": "parent_id", "message": "no such task"}])


@gateway_router.post(
    "/{task_name}/batch",
    response={200: BatchOut, 202: BatchOut, **ERRORS, 503: ErrorOut},
    summary="Queue many tasks of one function, all or nothing",
    operation_id="call_task_batch",
)
def call_task_batch(request: HttpRequest, task_name: str) -> Any:
    """`{"items": [{"args": {...}}, ...]}` -> 202 `{"items": [{"task_id", "status"}, ...]}` in the same order.

    Every item is validated before any is written; a bad one is a 422 naming its index. Sync tasks are
    refused (422): call them one by one. `run_at` / `delay_s`, `expires_at` / `expires_s` and `priority`
    beside `items` apply to every item.
    """
    caller = request_caller(request)
    caller.check_may_call(task_name)
    spec = task_spec(task_name)
    key = request_key(request)
    body = read_json_body(request)
    unknown = set(body) - {"items", "priority", *TIMING_FIELDS}
    if unknown or not isinstance(body.get("items"), list):
        raise InvalidArguments(
            'send {"items": [{"args": {...}}, ...]}'
            + (f"; unknown field(s) {', '.join(sorted(unknown))}" if unknown else ""),
            fields=[{"field": "items", "message": "must be a list of {\"args\": {...}}"}],
        )
    batch = submissions.task_submit_many(ports=ports_of(request), spec=spec, items=body["items"], key=key,
                                         creator=caller.creator, timing=read_timing(body, spec),
                                         priority=body.get("priority"))
    items = [{"task_id": task_id, "status": status} for task_id, status in batch.items]
    return json_response({"items": items}, status=200 if batch.replayed else 202, replayed=batch.replayed)


RETRY_OPTIONS = ("timeout_ms", "pool")


def retry_changes(body: dict[str, Any]) -> retries.RetryChanges | None:
    """The changes a retry's body asks for (None: no body). Raises InvalidArguments naming unknown fields."""
    if not body:
        return None
    options = body.get("options", {})
    unknown = sorted(set(body) - {"args", "options"})
    if isinstance(options, dict):
        unknown += sorted(f"options.{name}" for name in set(options) - set(RETRY_OPTIONS))
    if unknown or not isinstance(options, dict):
        raise InvalidArguments(
            'send {"args": {...}, "options": {"timeout_ms": N, "pool": "name"}} (each part optional)'
            + (f"; unknown field(s) {', '.join(unknown)}" if unknown else "; options must be an object"),
            fields=[{"field": name, "message": "unknown field"} for name in unknown] or [
                {"field": "options", "message": "must be an object"}],
        )
    if "args" in body and not isinstance(body["args"], dict):
        raise InvalidArguments("'args' must be a JSON object of named arguments",
                               fields=[{"field": "args", "message": "must be an object"}])
    return retries.RetryChanges(args=body.get("args"), timeout_ms=options.get("timeout_ms"),
                                    pool=options.get("pool"))


def list_fields(raw: str | None) -> set[str]:
    """The optional fields `?fields=args,result` asks list items to include. Raises InvalidArguments (422)
    naming any other name."""
    asked = {name.strip() for name in (raw or "").split(",") if name.strip()}
    unknown = sorted(asked - set(selectors.LIST_OPTIONAL_FIELDS))
    if unknown:
        shown = ", ".join(repr(name[:40]) for name in unknown[:10]) + (", ..." if len(unknown) > 10 else "")
        raise InvalidArguments(
            f"unknown field(s) {shown} in fields; list items can also include "
            f"{', '.join(selectors.LIST_OPTIONAL_FIELDS)} (the other fields are always there)",
            fields=[{"field": "fields", "message": f"unknown field {name[:40]!r}"} for name in unknown[:10]],
        )
    return asked


@tasks_router.get("", response={200: TaskPageOut, **COMMON, 422: ErrorOut}, summary="List tasks, newest first",
                  exclude_unset=True)
def list_tasks(request: HttpRequest, query: Query[TaskListQuery]) -> Any:
    """At most 100 tasks a page (a bigger `limit` gets 100 and a `next_cursor`). Items leave out `args`,
    `result` and `traceback` unless `?fields=args,result,traceback` (or some of them) asks for them."""
    for name, value in query.dict().items():
        if isinstance(value, str) and "\x00" in value:
            raise BadRequest(f"the {name} filter cannot contain NUL characters", field=name)
    asked = list_fields(query.fields)
    page = selectors.task_list(
        filters=selectors.TaskFilters(
            status=query.status, function=query.function, pool=query.pool, execution_mode=query.mode,
            error_type=query.error_type, error_contains=query.error_contains, owner=request_caller(request).owner,
        ),
        limit=query.limit,
        cursor=query.cursor,
        leave_out=[name for name in selectors.LIST_OPTIONAL_FIELDS if name not in asked],
    )
    return {"items": [selectors.task_as_dict(t) for t in page.items], "next_cursor": page.next_cursor}


@tasks_router.get("/{task_id}", response={200: TaskOut, **COMMON, 404: ErrorOut, 422: ErrorOut},
                  summary="Get one task")
def get_task(request: HttpRequest, response: HttpResponse, task_id: str, wait: float = 0) -> Any:
    """With `?wait=N` (seconds, at most 60) the answer waits until the task finishes or N runs out.

    A wait holds a server thread, so this process grants at most NEUTRINO_LONG_POLL_MAX at once, and
    NEUTRINO_LONG_POLL_PER_CALLER to one caller; beyond that the task comes back at once, as it is,
    with `X-Neutrino-Wait: not-granted` and `Retry-After: 1`.
    """
    if not 0 <= wait <= selectors.MAX_WAIT_S:
        raise InvalidArguments(f"wait must be between 0 and {selectors.MAX_WAIT_S:.0f} seconds", field="wait")
    ports, caller = ports_of(request), request_caller(request)
    conf = neutrino_settings()
    slots = wait_slots(conf.long_poll_max, conf.long_poll_per_caller)
    with slots.take(caller.rate_key if wait > 0 else "") as granted:
        task = selectors.task_wait(task_id=parse_task_id(task_id), wait_s=wait if granted else 0,
                                   ledger=ports.ledger, events=ports.events, owner=caller.owner)
    if wait > 0 and not granted:
        response[WAIT_HEADER] = "not-granted"
        response["Retry-After"] = "1"
    return selectors.task_as_dict(task)


WAIT_HEADER = "X-Neutrino-Wait"


@tasks_router.get("/{task_id}/result", response={**COMMON, 404: ErrorOut, 409: ErrorOut, 503: ErrorOut},
                  summary="Download a task's result")
def get_task_result(request: HttpRequest, task_id: str) -> Any:
    """The completed task's result as a download: a stored object (a large result, bytes, a file) is
    streamed with its content type, length and `X-Neutrino-SHA256`; an inline result comes as JSON."""
    ports, caller = ports_of(request), request_caller(request)
    task = selectors.task_get(task_id=parse_task_id(task_id), owner=caller.owner)
    download = result_selectors.task_result_download(task=task, broker=ports.broker)
    return result_selectors.download_response(download)


@tasks_router.delete("/{task_id}", response={200: TaskOut, **COMMON, 404: ErrorOut, 409: ErrorOut},
                     summary="Cancel a task")
def cancel_task(request: HttpRequest, task_id: str) -> Any:
    caller = request_caller(request)
    task = services.task_cancel(ports=ports_of(request), task_id=parse_task_id(task_id), owner=caller.owner,
                                actor=actor_of_request(request, label=caller.creator.label))
    return selectors.task_as_dict(task)


@tasks_router.post(
    "/{task_id}/retry",
    response={200: RetryOut, 202: RetryOut, **COMMON, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut, 501: ErrorOut,
              503: ErrorOut},
    summary="Run a task again as a new task",
)
def retry_task(request: HttpRequest, task_id: str) -> Any:
    """No body: the same arguments. `{"args": {...}, "options": {"timeout_ms": N, "pool": "name"}}`: a retry
    with changes (each part optional), validated as a submit is; the answer's `changes` says what differs.
    Honours Idempotency-Key like a submit: the same key answers with the same new task."""
    caller = request_caller(request)
    changes = retry_changes(read_json_body(request))
    retry = retries.task_retry(ports=ports_of(request), task_id=parse_task_id(task_id), key=request_key(request),
                               creator=caller.creator, owner=caller.owner, allowed_tasks=caller.allowed_tasks,
                               changes=changes, actor=actor_of_request(request, label=caller.creator.label))
    return Status(202 if retry.status in ("pending", "queued") else 200, dataclasses.asdict(retry))


@tasks_router.post(
    "/{task_id}/run-now",
    response={200: TaskOut, **COMMON, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut, 503: ErrorOut},
    summary="Queue a scheduled (delayed) task now",
)
def run_task_now(request: HttpRequest, task_id: str) -> Any:
    """A `scheduled` task is queued at once, as if its run_at had come (its run_at becomes now); 409 for a
    task that is not scheduled (any more)."""
    caller = request_caller(request)
    task = delays.task_run_now(ports=ports_of(request), task_id=parse_task_id(task_id), owner=caller.owner,
                               allowed_tasks=caller.allowed_tasks, who=caller.creator.label,
                               actor=actor_of_request(request, label=caller.creator.label))
    return selectors.task_as_dict(task)
