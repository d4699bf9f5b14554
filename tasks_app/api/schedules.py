"""The schedules API (`/schedules`): list, create, read, change, delete, pause, resume, run now, history.

Who may: admin tokens, and anonymous callers where NEUTRINO_ALLOW_ANONYMOUS lets them in (a laptop's
`neutrino dev`: they may already call every task). A schedule fires its task as `schedule:<name>`, on
behalf of nobody in particular, and its history shows every fire: so a token limited to its own tasks
may not make or read one (403), whatever tasks it may call.

Bodies name the task `task` (the function's name); a schedule has a `cron` expression (5 fields or an
@-name) or an `interval_s`, never both. Thin: parse, call tasks_app.services.schedules, answer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import Router

from tasks_app.api.auth import Caller, api_auth, request_caller
from tasks_app.api.routes import COMMON, ERRORS, ErrorOut, json_response, read_json_body
from tasks_app.core.errors import Forbidden, InvalidArguments
from tasks_app.core.ports import ports_of
from tasks_app.models import Schedule
from tasks_app.selectors import schedules as selectors
from tasks_app.services import schedules as services
from tasks_app.services.audit import Actor, actor_of_request

schedules_router = Router(tags=["schedules"], auth=api_auth)

# The body's names -> the service's (the API says `task` where the model says function_name).
BODY_FIELDS = {"task": "function_name", "args": "args", "cron": "cron", "interval_s": "interval_s",
               "timezone": "timezone", "enabled": "enabled", "missed": "missed", "catchup_max": "catchup_max",
               "description": "description"}
ONE = {**COMMON, 404: ErrorOut}


def manager(request: HttpRequest) -> Caller:
    """The caller, when it may manage schedules; Forbidden (403) otherwise."""
    caller = request_caller(request)
    if caller.token_id is not None and not caller.admin:
        raise Forbidden(
            f"{caller.creator.label} may not manage schedules: a schedule fires tasks on behalf of nobody in "
            "particular, so it takes an admin token (`neutrino token create NAME --admin`)")
    return caller


def _actor(request: HttpRequest, caller: Caller) -> Actor:
    """Who the audit trail names for a change made through the API: the caller's token (or anonymous)."""
    return actor_of_request(request, label=caller.creator.label)


def _fields(body: dict[str, Any], *, allowed: dict[str, str]) -> dict[str, Any]:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise InvalidArguments(
            f"unknown field(s) {', '.join(unknown)}; a schedule has {', '.join(allowed)}",
            field=unknown[0], fields=[{"field": name, "message": "unknown field"} for name in unknown])
    return {allowed[key]: value for key, value in body.items()}


def _one(name: str) -> HttpResponse:
    schedule = selectors.schedule_detail(name=name)
    if schedule is None:
        services.schedule_get(name=name)  # raises ScheduleNotFound
    assert schedule is not None
    return json_response(_detail(schedule), status=200)


def _detail(schedule: Schedule) -> dict[str, Any]:
    return {**selectors.schedule_as_dict(schedule),
            "next_runs": [run.isoformat() for run in selectors.schedule_next_runs(schedule)]}


@schedules_router.get("", response={200: dict, **COMMON}, summary="List schedules")
def list_schedules(request: HttpRequest, task: str | None = None) -> HttpResponse:
    """Every schedule by name (`?task=` one task's), each with its next run and its last fire's task status."""
    manager(request)
    items = [selectors.schedule_as_dict(s) for s in selectors.schedule_list(function_name=task)]
    return json_response({"items": items}, status=200)


@schedules_router.post("", response={201: dict, **ERRORS}, summary="Create a schedule")
def create_schedule(request: HttpRequest) -> HttpResponse:
    """`{"name", "task", "args", "cron" | "interval_s", "timezone", "missed", "catchup_max", "enabled",
    "description"}`: 201 with the schedule; 409 when the name is taken; 422 naming a bad field (a sync
    task, an expression, a zone, arguments that do not fit the task's signature)."""
    caller = manager(request)
    body = read_json_body(request)
    name = body.pop("name", None)
    schedule = services.schedule_create(name=services.check_name(name), fields=_fields(body, allowed=BODY_FIELDS),
                                        created_by=caller.creator.label, actor=_actor(request, caller))
    return json_response(_detail(schedule), status=201)


@schedules_router.get("/{name}", response={200: dict, **ONE}, summary="Get a schedule and its next 5 runs")
def get_schedule(request: HttpRequest, name: str) -> HttpResponse:
    manager(request)
    return _one(name)


@schedules_router.patch("/{name}", response={200: dict, **ERRORS}, summary="Change a schedule")
def update_schedule(request: HttpRequest, name: str) -> HttpResponse:
    """Any of the create fields but `name`. A new expression, interval or zone starts from the next slot."""
    caller = manager(request)
    changes = _fields(read_json_body(request), allowed=BODY_FIELDS)
    services.schedule_update(name=name, changes=changes, by=caller.creator.label, actor=_actor(request, caller))
    return _one(name)


@schedules_router.delete("/{name}", response={200: dict, **ONE}, summary="Delete a schedule and its history")
def delete_schedule(request: HttpRequest, name: str) -> HttpResponse:
    """The tasks it fired stay. A schedule declared in code comes back at the next scheduler start unless its
    decorator is gone: pause it to stop it for good."""
    caller = manager(request)
    services.schedule_delete(name=name, actor=_actor(request, caller))
    return json_response({"name": name, "deleted": True}, status=200)


@schedules_router.post("/{name}/pause", response={200: dict, **ONE}, summary="Pause a schedule")
def pause_schedule(request: HttpRequest, name: str) -> HttpResponse:
    caller = manager(request)
    services.schedule_pause(name=name, by=caller.creator.label, actor=_actor(request, caller))
    return _one(name)


@schedules_router.post("/{name}/resume", response={200: dict, **ONE}, summary="Resume a schedule")
def resume_schedule(request: HttpRequest, name: str) -> HttpResponse:
    """It fires again from its next slot; the slots of the pause are not made up."""
    caller = manager(request)
    services.schedule_resume(name=name, actor=_actor(request, caller))
    return _one(name)


@schedules_router.post("/{name}/run", response={202: dict, **ONE, 422: ErrorOut}, summary="Run a schedule's task now")
def run_schedule(request: HttpRequest, name: str) -> HttpResponse:
    """One task now, paused or not (its fire's reason is "manual"); the schedule's slots do not move."""
    caller = manager(request)
    fire = services.schedule_run_now(ports=ports_of(request), name=name, by=caller.creator.label,
                                     actor=_actor(request, caller))
    return json_response({**selectors.fire_as_dict(fire), "poll_url": f"/tasks/{fire.task_id}"}, status=202)


@schedules_router.get("/{name}/fires", response={200: dict, **ONE, 422: ErrorOut},
                      summary="A schedule's fires, newest first, with their tasks' statuses")
def schedule_fires(request: HttpRequest, name: str, limit: int = 50, before: datetime | None = None) -> HttpResponse:
    """At most 200 a page; `next_before` (a slot time) asks for the page after."""
    manager(request)
    schedule = services.schedule_get(name=name)
    fires = selectors.schedule_fires(schedule=schedule, limit=limit, before=before)
    page = max(1, min(limit, selectors.MAX_FIRES_PAGE))
    return json_response({"items": [selectors.fire_as_dict(f) for f in fires],
                          "next_before": fires[-1].slot_at if len(fires) == page else None}, status=200)
