"""Bulk actions over a filter of tasks: `POST /tasks/bulk`, `GET /tasks/bulk/<id>`, `POST /tasks/bulk/<id>/stop`.

Admin tokens only (another caller gets 403): a bulk action reaches every caller's tasks. The work runs in
the `neutrino scheduler` process (`tasks_app.services.bulk`); these operations ask for it, read its
progress and stop it. Thin: parse, call a service or a selector, answer.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema, Status

from tasks_app.api.auth import Caller, api_auth, request_caller
from tasks_app.api.routes import COMMON, ErrorOut, json_response, read_json_body
from tasks_app.core.errors import Forbidden, InvalidArguments, TaskNotFound
from tasks_app.selectors.bulk import bulk_as_dict, bulk_get, filter_from_json
from tasks_app.services.audit import actor_of_request
from tasks_app.services.bulk import bulk_create, bulk_stop

bulk_router = Router(tags=["bulk actions"], auth=api_auth)
BODY_KEYS = {"filter", "action", "expected_count"}


class BulkOut(Schema):
    bulk_id: str
    action: str
    filter: dict[str, str]
    status: str  # queued, running, done, stopped or failed
    total: int  # the tasks the filter matched when it was asked for
    done: int  # acted on
    failed: int  # matched but not acted on (finished meanwhile, active ones to delete, sync ones to retry)
    note: str | None = None
    stop_requested: bool
    created_by: str
    created_at: Any
    started_at: Any = None
    finished_at: Any = None


def _admin(request: HttpRequest) -> Caller:
    caller = request_caller(request)
    if not caller.admin:
        who = f"token {caller.token_name!r}" if caller.token_name else "an anonymous caller"
        raise Forbidden(f"bulk actions need an admin token, and {who} is not one "
                        "(`neutrino token create NAME --admin`)")
    return caller


def _bulk_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise TaskNotFound(f"no bulk action with id {raw!r}: ids are UUIDs", bulk_id=raw)


@bulk_router.post("", response={202: BulkOut, **COMMON, 409: ErrorOut, 413: ErrorOut, 422: ErrorOut},
                  summary="Cancel, retry or delete every task a filter matches, in the background")
def create_bulk(request: HttpRequest) -> Any:
    """`{"filter": {"status": "failed", "function": "f", ...}, "action": "cancel|retry|delete",
    "expected_count": N}` -> 202 with the action's id and `total`. With `expected_count`, 409 (the body's
    `count` says how many) when the filter now matches another number of tasks. Filter keys: status, function,
    pool, mode, error_type, error_contains, id_prefix, created_after, created_before (ISO 8601)."""
    caller = _admin(request)
    body = read_json_body(request)
    unknown = sorted(set(body) - BODY_KEYS)
    expected = body.get("expected_count")
    if unknown or not isinstance(body.get("action"), str) or (
            expected is not None and (not isinstance(expected, int) or isinstance(expected, bool) or expected < 0)):
        raise InvalidArguments(
            'send {"filter": {...}, "action": "cancel|retry|delete", "expected_count": N (optional)}'
            + (f"; unknown field(s) {', '.join(unknown)}" if unknown else ""),
            fields=[{"field": name, "message": "unknown field"} for name in unknown]
            + ([] if isinstance(body.get("action"), str) else [{"field": "action", "message": "required"}]),
        )
    bulk = bulk_create(filters=filter_from_json(body.get("filter", {})), action=body["action"],
                       expected_count=expected, actor=actor_of_request(request, label=caller.creator.label))
    return json_response({**bulk_as_dict(bulk), "poll_url": f"/tasks/bulk/{bulk.id}"}, status=202)


@bulk_router.get("/{bulk_id}", response={200: BulkOut, **COMMON, 404: ErrorOut}, summary="A bulk action's progress")
def get_bulk(request: HttpRequest, bulk_id: str) -> Any:
    _admin(request)
    return bulk_as_dict(bulk_get(bulk_id=_bulk_id(bulk_id)))


@bulk_router.post("/{bulk_id}/stop", response={200: BulkOut, **COMMON, 404: ErrorOut},
                  summary="Stop a bulk action after its current chunk")
def stop_bulk(request: HttpRequest, bulk_id: str) -> Any:
    caller = _admin(request)
    bulk = bulk_stop(bulk_id=_bulk_id(bulk_id), actor=actor_of_request(request, label=caller.creator.label))
    return Status(200, bulk_as_dict(bulk))
