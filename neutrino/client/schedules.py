"""Schedules through the client: `ScheduleInfo`, `ScheduleFire` and the flows of `/schedules`.

Both clients call these flows (`NeutrinoClient.create_schedule`, `await AsyncNeutrinoClient.create_schedule`,
...). Managing schedules takes an admin token (403, raised as `Unauthorized`, otherwise); an unknown name
raises `TaskNotFound` (the client's "not found"), a bad field `ValidationError` with the field named.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from neutrino.client.flows import Flow, Request, Submitted


@dataclass(frozen=True)
class ScheduleInfo:
    """One schedule as `GET /schedules/<name>` shows it. Times are ISO 8601 strings; `raw` is the whole body."""

    name: str
    task: str
    args: Mapping[str, Any] = field(default_factory=dict)
    cron: str | None = None
    interval_s: int | None = None
    timezone: str = "UTC"
    enabled: bool = True
    missed: str = "skip"
    catchup_max: int = 10
    description: str = ""
    source: str = "user"
    next_run_at: str | None = None
    last_fired_at: str | None = None
    paused_by: str | None = None
    next_runs: list[str] = field(default_factory=list)  # the next 5, in the schedule's zone (single reads)
    last_fire: Mapping[str, Any] | None = None  # {"slot_at", "task_id", "status"}
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ScheduleInfo:
        known = {name for name in cls.__dataclass_fields__ if name != "raw"}
        return cls(raw=dict(body), **{name: body[name] for name in known if body.get(name) is not None})


@dataclass(frozen=True)
class ScheduleFire:
    """One fire of a schedule: its slot, why it fired ("slot", "missed", "manual"), its task and the task's status."""

    slot_at: str
    fired_at: str
    reason: str
    task_id: str | None
    task_status: str | None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ScheduleFire:
        return cls(slot_at=str(body["slot_at"]), fired_at=str(body["fired_at"]), reason=str(body["reason"]),
                   task_id=body.get("task_id"), task_status=body.get("task_status"))


def schedule_path(name: str, action: str = "") -> str:
    return f"/schedules/{quote(name, safe='')}" + (f"/{action}" if action else "")


class ScheduleFlows:
    """The schedule operations, as flows (see neutrino.client.flows)."""

    def list_all(self, *, task: str | None) -> Flow[list[ScheduleInfo]]:
        reply = yield Request("GET", "/schedules", f"list_schedules(task={task!r})",
                              params={"task": task} if task else None, resend_ok=True)
        body = reply.body if isinstance(reply.body, dict) else {}
        return [ScheduleInfo.from_body(item) for item in body.get("items", [])]

    def get(self, name: str) -> Flow[ScheduleInfo]:
        reply = yield Request("GET", schedule_path(name), f"get_schedule({name!r})", resend_ok=True)
        return ScheduleInfo.from_body(reply.body)

    def create(self, name: str, task: str, fields: dict[str, Any]) -> Flow[ScheduleInfo]:
        # Not resent after a broken connection: a create that arrived answers the repeat with 409.
        reply = yield Request("POST", "/schedules", f"create_schedule({name!r}, {task!r})",
                              body={"name": name, "task": task, **fields})
        return ScheduleInfo.from_body(reply.body)

    def update(self, name: str, changes: dict[str, Any]) -> Flow[ScheduleInfo]:
        reply = yield Request("PATCH", schedule_path(name), f"update_schedule({name!r})", body=changes,
                              resend_ok=True)
        return ScheduleInfo.from_body(reply.body)

    def act(self, name: str, action: str) -> Flow[ScheduleInfo]:
        """pause or resume (both safe to repeat)."""
        reply = yield Request("POST", schedule_path(name, action), f"{action}_schedule({name!r})", resend_ok=True)
        return ScheduleInfo.from_body(reply.body)

    def run(self, name: str) -> Flow[Submitted]:
        # Not resent: each run that arrives fires a task.
        reply = yield Request("POST", schedule_path(name, "run"), f"run_schedule({name!r})")
        body = reply.body if isinstance(reply.body, dict) else {}
        return Submitted(task_id=str(body["task_id"]), function_name="", status="pending")

    def delete(self, name: str) -> Flow[None]:
        yield Request("DELETE", schedule_path(name), f"delete_schedule({name!r})", resend_ok=True)
        return None

    def fires(self, name: str, *, limit: int, before: str | None) -> Flow[list[ScheduleFire]]:
        params = {"limit": str(limit), **({"before": before} if before else {})}
        reply = yield Request("GET", schedule_path(name, "fires"), f"schedule_fires({name!r})", params=params,
                              resend_ok=True)
        body = reply.body if isinstance(reply.body, dict) else {}
        return [ScheduleFire.from_body(item) for item in body.get("items", [])]


def schedule_fields(*, cron: str | None, interval_s: int | None, args: Mapping[str, Any] | None, timezone: str,
                    missed: str, catchup_max: int, enabled: bool, description: str) -> dict[str, Any]:
    """The body of a create (the server validates it and names a bad field)."""
    fields: dict[str, Any] = {"args": dict(args or {}), "timezone": timezone, "missed": missed,
                              "catchup_max": catchup_max, "enabled": enabled, "description": description}
    if cron is not None:
        fields["cron"] = cron
    if interval_s is not None:
        fields["interval_s"] = interval_s
    return fields
