"""Groups and chains: `POST /api/<task>/group`, `POST /chains`, `GET|DELETE /groups/<id>`.

Thin: parse, call `tasks_app.services.groups`, answer. A caller that is not an admin sees and cancels only
its own groups; it must be allowed to call every function a group or chain names.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.http import HttpRequest
from ninja import Router

from tasks_app.api.auth import api_auth, request_caller
from tasks_app.api.routes import ERRORS, ErrorOut, json_response, read_json_body, read_parent
from tasks_app.core.errors import GroupNotFound, InvalidArguments
from tasks_app.core.ports import ports_of
from tasks_app.core.registry import task_spec
from tasks_app.models import GroupPolicy
from tasks_app.selectors import groups as selectors
from tasks_app.services import groups as services

group_submit_router = Router(tags=["groups"], auth=api_auth)
groups_router = Router(tags=["groups"], auth=api_auth)
chains_router = Router(tags=["groups"], auth=api_auth)


def _refuse_unknown(body: dict[str, Any], known: set[str], shape: str) -> None:
    unknown = set(body) - known
    if unknown:
        raise InvalidArguments(f"unknown field(s) {', '.join(sorted(unknown))}; send {shape}",
                               fields=[{"field": name, "message": "unknown field"} for name in sorted(unknown)])


@group_submit_router.post("/{task_name}/group", response={202: dict, **ERRORS, 503: ErrorOut},
                          summary="Queue a group of tasks and a callback that runs once all have finished")
def submit_group(request: HttpRequest, task_name: str) -> Any:
    """`{"items": [{"args": {...}}, ...], "then": "g", "then_args": {...}, "policy": "all"|"collect",
    "parent_id": ...}` -> 202 `{"group_id", "task_ids", "poll_url"}`. `g` gets `results` (item order),
    and with policy `collect` `failures` too."""
    caller = request_caller(request)
    body = read_json_body(request)
    shape = '{"items": [{"args": {...}}, ...], "then": "<task>", "then_args": {...}, "policy": "all"}'
    _refuse_unknown(body, {"items", "then", "then_args", "policy", "parent_id"}, shape)
    if not isinstance(body.get("items"), list):
        raise InvalidArguments(f"send {shape}", fields=[{"field": "items", "message": "must be a list"}])
    caller.check_may_call(task_name)
    then = body.get("then")
    if then is not None:
        caller.check_may_call(str(then))
    then_args = body.get("then_args") or {}
    if not isinstance(then_args, dict):
        raise InvalidArguments("then_args must be an object", field="then_args")
    group, task_ids = services.group_submit(
        ports=ports_of(request), spec=task_spec(task_name), items=body["items"], creator=caller.creator,
        then=task_spec(str(then)) if then is not None else None, then_args=then_args,
        policy=str(body.get("policy", GroupPolicy.ALL)), parent_id=read_parent(body, caller.owner))
    return json_response({"group_id": str(group.id), "size": group.size, "task_ids": task_ids,
                          "poll_url": f"/groups/{group.id}"}, status=202)


@chains_router.post("", response={202: dict, **ERRORS, 503: ErrorOut},
                    summary="Queue tasks that run one after another, each result passed on")
def submit_chain(request: HttpRequest) -> Any:
    """`{"steps": [{"function": "a", "args": {...}}, {"function": "b"}, ...]}` -> 202 `{"chain_id",
    "first_task_id", "poll_url"}`. Each step after the first gets the previous one's result as `result`."""
    caller = request_caller(request)
    body = read_json_body(request)
    shape = '{"steps": [{"function": "<task>", "args": {...}}, ...]}'
    _refuse_unknown(body, {"steps", "parent_id"}, shape)
    raw_steps = body.get("steps")
    if not isinstance(raw_steps, list) or not all(isinstance(s, dict) and "function" in s for s in raw_steps):
        raise InvalidArguments(f"send {shape}", fields=[{"field": "steps", "message": "must be a list of steps"}])
    steps = []
    for index, step in enumerate(raw_steps):
        if not isinstance(step.get("args", {}), dict) or set(step) - {"function", "args"}:
            raise InvalidArguments(f"step {index}: send {{\"function\": ..., \"args\": {{...}}}}",
                                   field=f"steps.{index}")
        caller.check_may_call(str(step["function"]))
        steps.append((task_spec(str(step["function"])), dict(step.get("args", {}))))
    group, first_task_id = services.chain_submit(ports=ports_of(request), steps=steps, creator=caller.creator,
                                                 parent_id=read_parent(body, caller.owner))
    return json_response({"chain_id": str(group.id), "group_id": str(group.id), "first_task_id": first_task_id,
                          "poll_url": f"/groups/{group.id}"}, status=202)


def _group_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise GroupNotFound(f"no group with id {raw!r}: group ids are UUIDs", group_id=raw)


@groups_router.get("/{group_id}", response={200: dict, **ERRORS}, summary="A group or chain, with counts by status")
def get_group(request: HttpRequest, group_id: str) -> Any:
    group = selectors.group_get(group_id=_group_id(group_id), owner=request_caller(request).owner)
    return selectors.group_as_dict(group)


@groups_router.delete("/{group_id}", response={200: dict, **ERRORS}, summary="Cancel a group's unfinished tasks")
def cancel_group(request: HttpRequest, group_id: str) -> Any:
    """Its unfinished members are cancelled; its callback (a chain's later steps) ends cancelled, unrun."""
    group = selectors.group_get(group_id=_group_id(group_id), owner=request_caller(request).owner)
    cancelled = services.group_cancel(ports=ports_of(request), group=group)
    return {**selectors.group_as_dict(selectors.group_get(group_id=group.id)), "cancelled": cancelled}
