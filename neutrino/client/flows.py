"""The client's operations as flows: generators that yield the requests one operation needs.

A flow gets each request's `Reply` sent back (or its error thrown in) and returns the operation's
result, so the logic of every operation is written once and driven by a blocking loop
(`NeutrinoClient`) or an asyncio one (`AsyncNeutrinoClient`); `advance` is the one step both loops take.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from neutrino.client.context import current_task_id
from neutrino.client.errors import (
    GatewayUnavailable,
    NeutrinoClientError,
    TaskCancelled,
    TaskExpired,
    TaskFailed,
    TaskTimeout,
)
from neutrino.client.models import BulkInfo, GroupInfo, LogLine, TaskInfo, TaskLog, TaskPage

DEFAULT_WAIT_S = 300.0
MAX_POLL_S = 60.0  # the server's longest long-poll
POLL_SLACK_S = 10.0  # a long-poll request's own timeout is its wait plus this
DEFAULT_CHUNK_SIZE = 1000  # the server's default NEUTRINO_BATCH_MAX
MAX_PAGE = 100  # the most tasks the server puts in one page of GET /tasks

T = TypeVar("T")
SLEEP = "SLEEP"  # a Request with this method is a pause the client's loop takes, not an HTTP request


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    call: str  # how the caller called it, for messages: "call_sync('add')"
    params: dict[str, str] | None = None
    body: Any = None
    key: str | None = None  # Idempotency-Key
    timeout_s: float | None = None
    resend_ok: bool = False  # safe to send again after the connection broke mid-request
    timeout_error: type[NeutrinoClientError] = GatewayUnavailable
    text_answer: bool = False  # the answer is not a JSON object: its body comes back as {"text", "headers"}


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any


Flow = Generator[Request, Reply, T]


@dataclass(frozen=True)
class Done(Generic[T]):
    """A flow's result, once it has no more requests to make."""

    value: T


def advance(flow: Flow[T], outcome: Reply | NeutrinoClientError | None) -> Request | Done[T]:
    """Hand `flow` the outcome of its last request (None to start it); get its next request or its result."""
    try:
        if outcome is None:
            return next(flow)
        if isinstance(outcome, NeutrinoClientError):
            return flow.throw(outcome)
        return flow.send(outcome)
    except StopIteration as stop:
        return Done(stop.value)


@dataclass(frozen=True)
class Submitted:
    task_id: str
    function_name: str
    status: str
    result: Any = None  # known when a sync task ran in the submit itself
    deduplicated: bool = False  # a unique task's duplicate: the first submit's task


class Flows:
    """The operations, as flows. Holds the settings both clients share."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    def run(self, name: str, args: Mapping[str, Any], *, key: str | None, timeout: float | None,
            wait_timeout: float) -> Flow[Any]:
        call = f"call_sync({describe(name, args)})"
        reply = yield Request("POST", f"/api/{name}", call, body={"args": dict(args)},
                              key=key or str(uuid.uuid4()), timeout_s=timeout, resend_ok=True,
                              timeout_error=TaskTimeout)
        body = reply.body if isinstance(reply.body, dict) else {}
        if body.get("status") == "completed" and "result" in body:
            return body["result"]
        # A queued task: call_sync waits for it like wait() does.
        return (yield from self.wait(str(body["task_id"]), timeout=wait_timeout, call=call))

    def submit(self, name: str, args: Mapping[str, Any], *, key: str | None,
               timeout: float | None, timing: Mapping[str, Any] | None = None,
               callback_url: str | None = None) -> Flow[Submitted]:
        call = f"call_async({describe(name, args)})"
        body: dict[str, Any] = {"args": dict(args), **(timing or {})}
        if callback_url is not None:
            body["callback_url"] = callback_url
        if current_task_id() is not None:  # submitted from inside a task: its child
            body["parent_id"] = current_task_id()
        reply = yield Request("POST", f"/api/{name}", call, body=body,
                              key=key or str(uuid.uuid4()), timeout_s=timeout, resend_ok=True)
        return _submitted(reply, function_name=name)

    def submit_many(self, name: str, items: list[Mapping[str, Any]], *, key: str | None,
                    chunk_size: int, timing: Mapping[str, Any] | None = None) -> Flow[list[Submitted]]:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        base_key = key or str(uuid.uuid4())
        submitted: list[Submitted] = []
        for start in range(0, len(items), chunk_size):
            chunk = items[start:start + chunk_size]
            call = f"submit_many({name!r}, items {start}..{start + len(chunk) - 1} of {len(items)})"
            try:
                reply = yield Request("POST", f"/api/{name}/batch", call,
                                      body={"items": [{"args": dict(args)} for args in chunk], **(timing or {})},
                                      key=f"{base_key}-{start}", resend_ok=True)
            except NeutrinoClientError as exc:
                exc.submitted = list(submitted)
                raise
            body = reply.body if isinstance(reply.body, dict) else {}
            submitted += [Submitted(task_id=str(item["task_id"]), function_name=name, status=str(item["status"]))
                          for item in body.get("items", [])]
        return submitted

    def get(self, task_id: str, *, wait: float = 0.0, call: str | None = None) -> Flow[TaskInfo]:
        params = {"wait": f"{wait:.3f}"} if wait > 0 else None
        reply = yield Request("GET", task_path(task_id), call or f"get_task({task_id!r})", params=params,
                              timeout_s=(wait + POLL_SLACK_S) if wait > 0 else None, resend_ok=True)
        return TaskInfo.from_body(reply.body)

    def wait(self, task_id: str, *, timeout: float, call: str | None = None) -> Flow[Any]:
        call = call or f"wait({task_id!r})"
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            info = yield from self.get(task_id, wait=max(0.0, min(MAX_POLL_S, remaining)), call=call)
            if info.finished:
                return finished_result(info, call)
            if deadline - time.monotonic() <= 0:
                raise TaskTimeout(
                    f"{call}: task {info.function_name} {info.id} did not finish within {timeout:g} s; it is "
                    f"still {info.status} on the server (wait again, or cancel it)",
                    call=call, task_id=info.id, still_running=True, body=dict(info.raw), status_code=200,
                )

    def cancel(self, task_id: str) -> Flow[TaskInfo]:
        reply = yield Request("DELETE", task_path(task_id), f"cancel({task_id!r})", resend_ok=True)
        return TaskInfo.from_body(reply.body)

    def run_now(self, task_id: str) -> Flow[TaskInfo]:
        reply = yield Request("POST", f"{task_path(task_id)}/run-now", f"run_now({task_id!r})", resend_ok=True)
        return TaskInfo.from_body(reply.body)

    def retry(self, task_id: str, *, key: str | None, args: Mapping[str, Any] | None = None,
              timeout_ms: int | None = None, pool: str | None = None) -> Flow[Submitted]:
        options = {name: value for name, value in (("timeout_ms", timeout_ms), ("pool", pool)) if value is not None}
        body: dict[str, Any] = {"args": dict(args)} if args is not None else {}
        if options:
            body["options"] = options
        reply = yield Request("POST", f"{task_path(task_id)}/retry", f"retry({task_id!r})", body=body or None,
                              key=key or str(uuid.uuid4()), resend_ok=True)
        return _submitted(reply, function_name="")

    def logs(self, task_id: str, *, attempt: int | None) -> Flow[TaskLog]:
        params = {"attempt": str(attempt)} if attempt is not None else None
        reply = yield Request("GET", f"{task_path(task_id)}/logs", f"logs({task_id!r})", params=params,
                              resend_ok=True, text_answer=True)
        headers = reply.body["headers"]
        lines = [LogLine(ts=float(item["ts"]), level=str(item["level"]), stream=str(item["stream"]),
                         text=str(item["text"]))
                 for item in map(json.loads, reply.body["text"].splitlines()) if isinstance(item, dict)]
        attempts = [int(n) for n in headers.get("x-neutrino-log-attempts", "").split(",") if n.strip().isdigit()]
        return TaskLog(task_id=task_id, attempt=int(headers.get("x-neutrino-attempt", attempt or 0)),
                       attempts=attempts, lines=lines,
                       dropped_bytes=int(headers.get("x-neutrino-log-dropped-bytes", 0)))

    def list_page(self, *, status: str | None, function: str | None, pool: str | None, mode: str | None,
                  limit: int, cursor: str | None, fields: Sequence[str] = ()) -> Flow[TaskPage]:
        """A page of at most MAX_PAGE tasks (the server caps `limit`); items carry args, result and traceback
        only when `fields` names them."""
        params = {k: str(v) for k, v in {"status": status, "function": function, "pool": pool, "mode": mode,
                                         "limit": limit, "cursor": cursor,
                                         "fields": ",".join(fields) or None}.items() if v is not None}
        reply = yield Request("GET", "/tasks", "list_tasks(" + ", ".join(f"{k}={v!r}" for k, v in params.items())
                              + ")", params=params, resend_ok=True)
        body = reply.body if isinstance(reply.body, dict) else {}
        return TaskPage(items=[TaskInfo.from_body(item) for item in body.get("items", [])],
                        next_cursor=body.get("next_cursor"))


    def group(self, name: str, items: list[Mapping[str, Any]], *, then: str | None,
              then_args: Mapping[str, Any] | None, policy: str) -> Flow[GroupInfo]:
        body: dict[str, Any] = {"items": [{"args": dict(args)} for args in items], "policy": policy}
        if then is not None:
            body["then"] = then
            body["then_args"] = dict(then_args or {})
        if current_task_id() is not None:
            body["parent_id"] = current_task_id()
        # No Idempotency-Key on groups yet: not sent again once it may have reached the server.
        reply = yield Request("POST", f"/api/{quote(name, safe='')}/group",
                              f"group({name!r}, {len(items)} items, then={then!r})", body=body)
        return GroupInfo.from_body(reply.body)

    def chain(self, steps: list[tuple[str, Mapping[str, Any]]]) -> Flow[GroupInfo]:
        body: dict[str, Any] = {"steps": [{"function": name, "args": dict(args)} for name, args in steps]}
        if current_task_id() is not None:
            body["parent_id"] = current_task_id()
        reply = yield Request("POST", "/chains", f"chain({' -> '.join(name for name, _ in steps)})", body=body)
        return GroupInfo.from_body({**reply.body, "group_id": reply.body["chain_id"]})

    def get_group(self, group_id: str, *, call: str | None = None) -> Flow[GroupInfo]:
        reply = yield Request("GET", group_path(group_id), call or f"get_group({group_id!r})", resend_ok=True)
        return GroupInfo.from_body(reply.body)

    def cancel_group(self, group_id: str) -> Flow[GroupInfo]:
        reply = yield Request("DELETE", group_path(group_id), f"cancel_group({group_id!r})", resend_ok=True)
        return GroupInfo.from_body(reply.body)

    def wait_group(self, group_id: str, *, timeout: float) -> Flow[Any]:
        """The callback's result once the group fired (a chain: its last step's result), polling the group
        (its callback then with a long-poll). A group without a callback: its counts, once it fired."""
        call = f"wait_group({group_id!r})"
        deadline = time.monotonic() + timeout
        pause = 0.05
        while True:
            info = yield from self.get_group(group_id, call=call)
            chain_done = "chain" not in info.raw or info.result_task_id is not None
            if info.fired and chain_done:
                result_task = info.result_task_id or info.callback_task_id
                if result_task is None:
                    return dict(info.counts)
                return (yield from self.wait(result_task, timeout=max(0.0, deadline - time.monotonic()), call=call))
            if time.monotonic() >= deadline:
                raise TaskTimeout(f"{call}: the group did not finish within {timeout:g} s "
                                  f"({info.finished} of {info.size} finished)", call=call, status_code=200,
                                  body=dict(info.raw))
            yield Request(SLEEP, "", call, timeout_s=pause)
            pause = min(1.0, pause * 2)

    def bulk(self, filter: Mapping[str, Any], action: str, *, expected_count: int | None) -> Flow[BulkInfo]:
        body: dict[str, Any] = {"filter": dict(filter), "action": action}
        if expected_count is not None:
            body["expected_count"] = expected_count
        # Not sent again once it may have reached the server: a second request would be a second action.
        reply = yield Request("POST", "/tasks/bulk", f"bulk({dict(filter)!r}, {action!r})", body=body)
        return BulkInfo.from_body(reply.body)

    def bulk_status(self, bulk_id: str) -> Flow[BulkInfo]:
        reply = yield Request("GET", bulk_path(bulk_id), f"bulk_status({bulk_id!r})", resend_ok=True)
        return BulkInfo.from_body(reply.body)

    def bulk_stop(self, bulk_id: str) -> Flow[BulkInfo]:
        reply = yield Request("POST", f"{bulk_path(bulk_id)}/stop", f"bulk_stop({bulk_id!r})", resend_ok=True)
        return BulkInfo.from_body(reply.body)


def group_path(group_id: str) -> str:
    return f"/groups/{quote(str(group_id), safe='')}"


def bulk_path(bulk_id: str) -> str:
    return f"/tasks/bulk/{quote(str(bulk_id), safe='')}"


def _submitted(reply: Reply, *, function_name: str) -> Submitted:
    """The task one submit made, from the server's answer to it."""
    body = reply.body if isinstance(reply.body, dict) else {}
    return Submitted(task_id=str(body["task_id"]), function_name=function_name, status=str(body.get("status", "")),
                     result=body.get("result"), deduplicated=bool(body.get("deduplicated", False)))


def timing_fields(*, delay_s: float | None = None, run_at: datetime | str | None = None,
                  expires_s: float | None = None, expires_at: datetime | str | None = None) -> dict[str, Any]:
    """The body fields of a submit's timing; a datetime is sent as ISO 8601 (a naive one is refused by the
    server, 422 naming the field: it names no moment without a time zone)."""
    given = {"delay_s": delay_s, "run_at": run_at, "expires_s": expires_s, "expires_at": expires_at}
    return {name: value.isoformat() if isinstance(value, datetime) else value
            for name, value in given.items() if value is not None}


def flow_fields(*, priority: str | None = None, unique_for_s: float | None = None) -> dict[str, Any]:
    """The body fields of a submit's priority ("high", "normal", "low") and uniqueness window (the server
    checks them: 422 naming the field)."""
    given = {"priority": priority, "unique_for_s": unique_for_s}
    return {name: value for name, value in given.items() if value is not None}


def describe(name: str, args: Mapping[str, Any] | None = None) -> str:
    if not args:
        return f"{name}()"
    shown = ", ".join(f"{k}={v!r}" for k, v in list(args.items())[:4])
    shown = shown if len(shown) <= 120 else shown[:117] + "..."
    return f"{name}({shown}{', ...' if len(args) > 4 else ''})"


def finished_result(info: TaskInfo, call: str) -> Any:
    """A finished task's result, or the exception its end calls for."""
    common: dict[str, Any] = {"call": call, "status_code": 200, "body": dict(info.raw), "task_id": info.id}
    if info.status == "completed":
        return info.result
    if info.status == "cancelled":
        raise TaskCancelled(f"{call}: task {info.function_name} {info.id} was cancelled"
                            + (f": {info.error}" if info.error else ""), **common)
    if info.status == "expired":
        raise TaskExpired(f"{call}: task {info.function_name} {info.id} expired without running: it had not "
                          f"started by its expires_at ({info.expires_at})", **common)
    if info.error_type == "TimeoutError":
        raise TaskTimeout(f"{call}: task {info.function_name} {info.id} timed out: {info.error}", **common)
    raise TaskFailed(
        f"{call}: task {info.function_name} {info.id} failed: {info.error or 'no error recorded'}"
        + (f" ({info.error_type})" if info.error_type else ""),
        error_type=info.error_type, traceback=info.traceback, **common,
    )


def task_path(task_id: str) -> str:
    return f"/tasks/{quote(str(task_id), safe='')}"
