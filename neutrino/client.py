"""The Python client of a Neutrino server (httpx; imports no Django).

    from neutrino import NeutrinoClient

    client = NeutrinoClient("http://127.0.0.1:8000", token="ntr_...")
    client.call_sync("add", a=1, b=2)                             # -> 3, or raises
    handle = client.call_async("generate_report", dataset="q3")   # -> AsyncTask
    handle.id; handle.status(); handle.wait(timeout=300); handle.cancel(); handle.retry()
    client.submit_many("generate_report", [{"dataset": d} for d in ("q1", "q2")])   # one request
    client.get_task(task_id); client.list_tasks(status="failed", function="add")

`AsyncNeutrinoClient` is the same for asyncio (`await client.call_sync(...)`; its handles are
`AwaitableTask`s). Both are context managers; `close()` frees the connection pool.

Exceptions. Every one carries `.call` (what was called), `.status_code` and `.body` (what the server
answered, when it answered) and `.task_id` (when a task was made); its message names both.

    NeutrinoClientError        the base; also a server error the server did not explain (500 without a task)
    ├── TaskFailed             the task raised, crashed or returned something JSON cannot hold
    │                          (`.error_type`, `.traceback`; 500 from a sync call, or `wait()` on a failed task)
    ├── TaskTimeout            the task ran past its own timeout and was killed (504), or `wait(timeout=)`
    │                          ran out first (`.still_running` is then True: the task goes on)
    ├── TaskCancelled          the task was cancelled before it finished
    ├── TaskNotFound           no task of that name, or no task with that id (404)
    ├── ValidationError        the request was refused as it stands: bad arguments (422, `.fields` names
    │                          each), a malformed body (400), a body over the size limit (413)
    ├── Conflict               409: cancelling a finished task; an Idempotency-Key reused for another call
    ├── Unauthorized           401/403: no token, an unknown or a revoked one
    ├── Overloaded             429: the task's pool is full or the caller's rate limit is spent;
    │                          `.retry_after` is the seconds the server asked to wait
    └── GatewayUnavailable     the server cannot be reached or answered 502/503 (NATS down, pool missing),
                               or sent no answer within the request's timeout

Timeouts. Every request has one: `timeout` (30 s by default) for each request, and `wait(timeout=300)`
for the whole wait, made of long-polls (`GET /tasks/<id>?wait=`) of at most 60 s each.

Retries. Submissions (`call_sync`, `call_async`, `submit_many`, `retry`) carry an `Idempotency-Key`,
one uuid4 per logical submit, and are sent again with the same key after a connection error
(`submit_retries`, 3 by default), so a retried submit never makes a second task: the server answers
a repeated key with the task the first request made. Reads are retried the same way. Nothing is
retried after the server answered: a 429 is raised with its `retry_after` for the caller to decide.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

__all__ = [
    "AsyncNeutrinoClient",
    "AsyncTask",
    "AwaitableTask",
    "Conflict",
    "GatewayUnavailable",
    "NeutrinoClient",
    "NeutrinoClientError",
    "Overloaded",
    "TaskCancelled",
    "TaskFailed",
    "TaskInfo",
    "TaskNotFound",
    "TaskPage",
    "TaskTimeout",
    "Unauthorized",
    "ValidationError",
]

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_WAIT_S = 300.0
MAX_POLL_S = 60.0  # the server's longest long-poll
POLL_SLACK_S = 10.0  # a long-poll request's own timeout is its wait plus this
DEFAULT_SUBMIT_RETRIES = 3
DEFAULT_CHUNK_SIZE = 1000  # the server's default NEUTRINO_BATCH_MAX
USER_AGENT = "neutrino-client/0.1.0"
FINISHED = frozenset({"completed", "failed", "cancelled"})

T = TypeVar("T")


# --- exceptions ------------------------------------------------------------------------------------


class NeutrinoClientError(Exception):
    """Base of every error this client raises."""

    def __init__(self, message: str, *, call: str = "", status_code: int | None = None,
                 body: Any = None, task_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.call = call
        self.status_code = status_code
        self.body = body
        self.task_id = task_id
        # submit_many: the handles of the tasks earlier requests queued before this error.
        self.submitted: list[Any] = []


class TaskFailed(NeutrinoClientError):
    def __init__(self, message: str, *, error_type: str | None = None, traceback: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.error_type = error_type
        self.traceback = traceback


class TaskTimeout(NeutrinoClientError):
    def __init__(self, message: str, *, still_running: bool = False, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.still_running = still_running


class TaskCancelled(NeutrinoClientError):
    pass


class TaskNotFound(NeutrinoClientError):
    pass


class ValidationError(NeutrinoClientError):
    def __init__(self, message: str, *, fields: list[dict[str, Any]] | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.fields = fields or []


class Conflict(NeutrinoClientError):
    pass


class Unauthorized(NeutrinoClientError):
    pass


class Overloaded(NeutrinoClientError):
    def __init__(self, message: str, *, retry_after: float = 1.0, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class GatewayUnavailable(NeutrinoClientError):
    pass


# --- what the server answers -----------------------------------------------------------------------


@dataclass(frozen=True)
class TaskInfo:
    """One task as `GET /tasks/<id>` shows it. Times are ISO 8601 strings; `raw` is the whole body."""

    id: str
    function_name: str
    status: str
    pool: str = ""
    execution_mode: str = ""
    args: Any = None
    result: Any = None
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    attempt: int = 0
    max_retries: int = 0
    timeout_ms: int = 0
    worker_id: str | None = None
    created_at: str | None = None
    queued_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    duration_ms: float | None = None
    progress: float | None = None
    progress_message: str | None = None
    retry_of: str | None = None
    cancel_requested: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> TaskInfo:
        known = {name for name in cls.__dataclass_fields__ if name not in ("id", "raw")}
        values = {name: body[name] for name in known if name in body and body[name] is not None}
        return cls(id=str(body["task_id"]), raw=dict(body), **values)


@dataclass(frozen=True)
class TaskPage:
    """A page of `list_tasks`, newest first; pass `next_cursor` as `cursor` for the next (None: last page)."""

    items: list[TaskInfo]
    next_cursor: str | None


# --- requests, as data: the sync and async clients send the same ones --------------------------------


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    call: str  # how the caller called it, for messages: "call_sync('add')"
    params: dict[str, str] | None = None
    body: Any = None
    key: str | None = None  # Idempotency-Key
    timeout_s: float | None = None
    resend_ok: bool = False  # safe to send again after the connection broke mid-request
    timeout_error: type[NeutrinoClientError] = GatewayUnavailable


@dataclass(frozen=True)
class _Reply:
    status: int
    body: Any


# A flow yields the requests one operation needs and gets each reply back: the logic is written once
# and driven by a blocking loop (NeutrinoClient) or an asyncio one (AsyncNeutrinoClient).
_Flow = Generator[_Request, _Reply, T]


def _describe(name: str, args: Mapping[str, Any] | None = None) -> str:
    if not args:
        return f"{name}()"
    shown = ", ".join(f"{k}={v!r}" for k, v in list(args.items())[:4])
    shown = shown if len(shown) <= 120 else shown[:117] + "..."
    return f"{name}({shown}{', ...' if len(args) > 4 else ''})"


def _parse_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_for(request: _Request, response: httpx.Response, body: Any) -> NeutrinoClientError:
    """The exception for an error answer, with the server's message in it."""
    status = response.status_code
    data = body if isinstance(body, dict) else {}
    said = str(data.get("message") or data.get("detail") or response.text[:300].strip() or response.reason_phrase)
    task_id = data.get("task_id")
    where = f" (task {task_id})" if task_id else ""
    message = f"{request.call}: {status} {said}{where}"
    common: dict[str, Any] = {"call": request.call, "status_code": status, "body": body,
                              "task_id": str(task_id) if task_id else None}
    if status in (401, 403):
        return Unauthorized(message, **common)
    if status == 404:
        return TaskNotFound(message, **common)
    if status == 409:
        if data.get("error_type") == "Cancelled":
            return TaskCancelled(message, **common)
        return Conflict(message, **common)
    if status in (400, 413, 422):
        return ValidationError(message, fields=data.get("fields"), **common)
    if status == 429:
        return Overloaded(message, retry_after=_retry_after(response, data), **common)
    if status == 500 and task_id:
        return TaskFailed(message, error_type=data.get("error_type"), traceback=data.get("traceback"), **common)
    if status == 504 and data.get("error") == "task_timeout":
        return TaskTimeout(message, **common)
    if status in (502, 503, 504):
        return GatewayUnavailable(message, **common)
    return NeutrinoClientError(message, **common)


def _retry_after(response: httpx.Response, data: Mapping[str, Any]) -> float:
    for value in (response.headers.get("Retry-After"), data.get("retry_after_s")):
        try:
            if value is not None:
                return max(0.0, float(value))
        except (TypeError, ValueError):
            continue
    return 1.0


def _finished_result(info: TaskInfo, call: str) -> Any:
    """A finished task's result, or the exception its end calls for."""
    common: dict[str, Any] = {"call": call, "status_code": 200, "body": dict(info.raw), "task_id": info.id}
    if info.status == "completed":
        return info.result
    if info.status == "cancelled":
        raise TaskCancelled(f"{call}: task {info.function_name} {info.id} was cancelled"
                            + (f": {info.error}" if info.error else ""), **common)
    if info.error_type == "TimeoutError":
        raise TaskTimeout(f"{call}: task {info.function_name} {info.id} timed out: {info.error}", **common)
    raise TaskFailed(
        f"{call}: task {info.function_name} {info.id} failed: {info.error or 'no error recorded'}"
        + (f" ({info.error_type})" if info.error_type else ""),
        error_type=info.error_type, traceback=info.traceback, **common,
    )


def _task_path(task_id: str) -> str:
    return f"/tasks/{quote(str(task_id), safe='')}"


@dataclass(frozen=True)
class _Submitted:
    task_id: str
    function_name: str
    status: str
    result: Any = None  # known when a sync task ran in the submit itself


class _Flows:
    """The operations, as flows. Holds the settings both clients share."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    def run(self, name: str, args: Mapping[str, Any], *, key: str | None, timeout: float | None,
            wait_timeout: float) -> _Flow[Any]:
        call = f"call_sync({_describe(name, args)})"
        reply = yield _Request("POST", f"/api/{name}", call, body={"args": dict(args)},
                               key=key or str(uuid.uuid4()), timeout_s=timeout, resend_ok=True,
                               timeout_error=TaskTimeout)
        body = reply.body if isinstance(reply.body, dict) else {}
        if body.get("status") == "completed" and "result" in body:
            return body["result"]
        # A queued task: call_sync waits for it like wait() does.
        return (yield from self.wait(str(body["task_id"]), timeout=wait_timeout, call=call))

    def submit(self, name: str, args: Mapping[str, Any], *, key: str | None,
               timeout: float | None) -> _Flow[_Submitted]:
        call = f"call_async({_describe(name, args)})"
        reply = yield _Request("POST", f"/api/{name}", call, body={"args": dict(args)},
                               key=key or str(uuid.uuid4()), timeout_s=timeout, resend_ok=True)
        body = reply.body if isinstance(reply.body, dict) else {}
        return _Submitted(task_id=str(body["task_id"]), function_name=name, status=str(body.get("status", "")),
                          result=body.get("result"))

    def submit_many(self, name: str, items: list[Mapping[str, Any]], *, key: str | None,
                    chunk_size: int) -> _Flow[list[_Submitted]]:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        base_key = key or str(uuid.uuid4())
        submitted: list[_Submitted] = []
        for start in range(0, len(items), chunk_size):
            chunk = items[start:start + chunk_size]
            call = f"submit_many({name!r}, items {start}..{start + len(chunk) - 1} of {len(items)})"
            try:
                reply = yield _Request("POST", f"/api/{name}/batch", call,
                                       body={"items": [{"args": dict(args)} for args in chunk]},
                                       key=f"{base_key}-{start}", resend_ok=True)
            except NeutrinoClientError as exc:
                exc.submitted = list(submitted)
                raise
            body = reply.body if isinstance(reply.body, dict) else {}
            submitted += [_Submitted(task_id=str(item["task_id"]), function_name=name, status=str(item["status"]))
                          for item in body.get("items", [])]
        return submitted

    def get(self, task_id: str, *, wait: float = 0.0, call: str | None = None) -> _Flow[TaskInfo]:
        params = {"wait": f"{wait:.3f}"} if wait > 0 else None
        reply = yield _Request("GET", _task_path(task_id), call or f"get_task({task_id!r})", params=params,
                               timeout_s=(wait + POLL_SLACK_S) if wait > 0 else None, resend_ok=True)
        return TaskInfo.from_body(reply.body)

    def wait(self, task_id: str, *, timeout: float, call: str | None = None) -> _Flow[Any]:
        call = call or f"wait({task_id!r})"
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            info = yield from self.get(task_id, wait=max(0.0, min(MAX_POLL_S, remaining)), call=call)
            if info.finished:
                return _finished_result(info, call)
            if deadline - time.monotonic() <= 0:
                raise TaskTimeout(
                    f"{call}: task {info.function_name} {info.id} did not finish within {timeout:g} s; it is "
                    f"still {info.status} on the server (wait again, or cancel it)",
                    call=call, task_id=info.id, still_running=True, body=dict(info.raw), status_code=200,
                )

    def cancel(self, task_id: str) -> _Flow[TaskInfo]:
        reply = yield _Request("DELETE", _task_path(task_id), f"cancel({task_id!r})", resend_ok=True)
        return TaskInfo.from_body(reply.body)

    def retry(self, task_id: str, *, key: str | None) -> _Flow[_Submitted]:
        reply = yield _Request("POST", f"{_task_path(task_id)}/retry", f"retry({task_id!r})",
                               key=key or str(uuid.uuid4()), resend_ok=True)
        body = reply.body if isinstance(reply.body, dict) else {}
        return _Submitted(task_id=str(body["task_id"]), function_name="", status=str(body.get("status", "")),
                          result=body.get("result"))

    def list_page(self, *, status: str | None, function: str | None, pool: str | None, mode: str | None,
             limit: int, cursor: str | None) -> _Flow[TaskPage]:
        params = {k: str(v) for k, v in {"status": status, "function": function, "pool": pool, "mode": mode,
                                         "limit": limit, "cursor": cursor}.items() if v is not None}
        reply = yield _Request("GET", "/tasks", "list_tasks(" + ", ".join(f"{k}={v!r}" for k, v in params.items())
                               + ")", params=params, resend_ok=True)
        body = reply.body if isinstance(reply.body, dict) else {}
        return TaskPage(items=[TaskInfo.from_body(item) for item in body.get("items", [])],
                        next_cursor=body.get("next_cursor"))


def _headers(token: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    headers.update(extra or {})
    return headers


def _backoff_s(attempt: int) -> float:
    return float(min(2.0, 0.2 * 2 ** (attempt - 1)))


def _may_resend(request: _Request, exc: httpx.TransportError) -> bool:
    """Nothing reached the server (connect failed), or the request is safe to repeat."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return True
    return request.resend_ok and isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError)


def _transport_error(request: _Request, exc: httpx.TransportError, base_url: str,
                     timeout_s: float) -> NeutrinoClientError:
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return request.timeout_error(
            f"{request.call}: no answer from {base_url} within {timeout_s:g} s (the client's timeout); "
            "the server may still be working on it", call=request.call)
    return GatewayUnavailable(f"{request.call}: cannot reach {base_url}: {exc!r}", call=request.call)


def _http_kwargs(request: _Request, default_timeout: float) -> tuple[float, dict[str, Any]]:
    timeout_s = request.timeout_s if request.timeout_s is not None else default_timeout
    headers = {"Idempotency-Key": request.key} if request.key else {}
    kwargs: dict[str, Any] = {"params": request.params, "headers": headers, "timeout": timeout_s}
    if request.body is not None:
        kwargs["content"] = json.dumps(request.body, separators=(",", ":"))
        headers["Content-Type"] = "application/json"
    return timeout_s, kwargs


def _reply(request: _Request, response: httpx.Response) -> _Reply:
    body = _parse_body(response)
    if response.status_code >= 400:
        raise _error_for(request, response, body)
    if not isinstance(body, dict):
        raise NeutrinoClientError(f"{request.call}: {response.status_code} answer is not a JSON object: "
                                  f"{response.text[:200]!r}", call=request.call, status_code=response.status_code)
    return _Reply(response.status_code, body)


# --- the blocking client ---------------------------------------------------------------------------


class NeutrinoClient:
    """A blocking client. `timeout` (seconds) bounds each request; `submit_retries` how often a submit
    is sent again after a connection error (same Idempotency-Key)."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = DEFAULT_TIMEOUT_S, *,
                 submit_retries: int = DEFAULT_SUBMIT_RETRIES, headers: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.submit_retries = submit_retries
        self._flows = _Flows(timeout)
        self._http = httpx.Client(base_url=self.base_url, headers=_headers(token, headers), timeout=timeout,
                                  transport=transport)

    def __enter__(self) -> NeutrinoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # The operations -------------------------------------------------------------------------------

    def call_sync(self, name: str, /, **args: Any) -> Any:
        """Run task `name` and return its result (a queued task is waited for, up to 300 s)."""
        return self.run(name, args)

    def run(self, name: str, args: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None,
            timeout: float | None = None, wait_timeout: float = DEFAULT_WAIT_S) -> Any:
        """`call_sync` with options: the request's `timeout`, a chosen `idempotency_key`."""
        return self._drive(self._flows.run(name, args or {}, key=idempotency_key, timeout=timeout,
                                           wait_timeout=wait_timeout))

    def call_async(self, name: str, /, **args: Any) -> AsyncTask:
        """Queue task `name`; returns its handle at once (a sync task has then already run)."""
        return self.submit(name, args)

    def submit(self, name: str, args: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None,
               timeout: float | None = None) -> AsyncTask:
        """`call_async` with options."""
        submitted = self._drive(self._flows.submit(name, args or {}, key=idempotency_key, timeout=timeout))
        return AsyncTask(self, submitted)

    def submit_many(self, name: str, items: Iterable[Mapping[str, Any]], *, idempotency_key: str | None = None,
                    chunk_size: int = DEFAULT_CHUNK_SIZE) -> list[AsyncTask]:
        """Queue one task per args mapping, in order, `chunk_size` per request (all or nothing per request).

        When a later request fails, the exception's `.submitted` lists the handles already queued.
        """
        try:
            submitted = self._drive(self._flows.submit_many(name, [dict(i) for i in items], key=idempotency_key,
                                                            chunk_size=chunk_size))
        except NeutrinoClientError as exc:
            exc.submitted = [AsyncTask(self, s) for s in exc.submitted]
            raise
        return [AsyncTask(self, s) for s in submitted]

    def get_task(self, task_id: str) -> TaskInfo:
        return self._drive(self._flows.get(str(task_id)))

    def wait(self, task_id: str, timeout: float = DEFAULT_WAIT_S) -> Any:
        """The result of task `task_id` once it finishes; raises TaskFailed, TaskCancelled or TaskTimeout."""
        return self._drive(self._flows.wait(str(task_id), timeout=timeout))

    def cancel(self, task_id: str) -> TaskInfo:
        return self._drive(self._flows.cancel(str(task_id)))

    def retry(self, task_id: str, *, idempotency_key: str | None = None) -> AsyncTask:
        return AsyncTask(self, self._drive(self._flows.retry(str(task_id), key=idempotency_key)))

    def list_tasks(self, *, status: str | None = None, function: str | None = None, pool: str | None = None,
                   mode: str | None = None, limit: int = 50, cursor: str | None = None) -> TaskPage:
        """A page of tasks, newest first."""
        return self._drive(self._flows.list_page(status=status, function=function, pool=pool, mode=mode, limit=limit,
                                            cursor=cursor))

    def iter_tasks(self, *, status: str | None = None, function: str | None = None, pool: str | None = None,
                   mode: str | None = None, page_size: int = 200) -> Iterator[TaskInfo]:
        """Every matching task, newest first, a page at a time."""
        cursor: str | None = None
        while True:
            page = self.list_tasks(status=status, function=function, pool=pool, mode=mode, limit=page_size,
                                   cursor=cursor)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # The loop that sends a flow's requests ----------------------------------------------------------

    def _drive(self, flow: _Flow[T]) -> T:
        try:
            request = next(flow)
            while True:
                try:
                    reply = self._send(request)
                except NeutrinoClientError as exc:
                    request = flow.throw(exc)
                    continue
                request = flow.send(reply)
        except StopIteration as stop:
            return stop.value

    def _send(self, request: _Request) -> _Reply:
        timeout_s, kwargs = _http_kwargs(request, self.timeout)
        attempt = 0
        while True:
            try:
                response = self._http.request(request.method, request.path, **kwargs)
            except httpx.TransportError as exc:
                if attempt < self.submit_retries and _may_resend(request, exc):
                    attempt += 1
                    time.sleep(_backoff_s(attempt))
                    continue
                raise _transport_error(request, exc, self.base_url, timeout_s) from exc
            return _reply(request, response)


class AsyncTask:
    """A task submitted through `NeutrinoClient`: poll it, wait for it, cancel or retry it."""

    def __init__(self, client: NeutrinoClient, submitted: _Submitted) -> None:
        self._client = client
        self.id = submitted.task_id
        self.function_name = submitted.function_name
        self._submitted = submitted

    def __repr__(self) -> str:
        return f"<AsyncTask {self.function_name or 'task'} {self.id}>"

    def info(self) -> TaskInfo:
        return self._client.get_task(self.id)

    def status(self) -> str:
        """pending, queued, running, completed, failed or cancelled."""
        return self.info().status

    def wait(self, timeout: float = DEFAULT_WAIT_S) -> Any:
        """The result once the task finishes; raises TaskFailed, TaskCancelled or TaskTimeout."""
        if self._submitted.status == "completed":
            return self._submitted.result
        return self._client.wait(self.id, timeout=timeout)

    def cancel(self) -> TaskInfo:
        """Cancel it (a queued task never runs, a running one is killed). Conflict if it already finished."""
        return self._client.cancel(self.id)

    def retry(self) -> AsyncTask:
        """Run it again as a new task (same arguments); returns the new task's handle."""
        return self._client.retry(self.id)


# --- the asyncio client ----------------------------------------------------------------------------


class AsyncNeutrinoClient:
    """The same client for asyncio: every operation is a coroutine; handles are `AwaitableTask`s."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = DEFAULT_TIMEOUT_S, *,
                 submit_retries: int = DEFAULT_SUBMIT_RETRIES, headers: Mapping[str, str] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.submit_retries = submit_retries
        self._flows = _Flows(timeout)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=_headers(token, headers), timeout=timeout,
                                       transport=transport)

    async def __aenter__(self) -> AsyncNeutrinoClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def call_sync(self, name: str, /, **args: Any) -> Any:
        return await self.run(name, args)

    async def run(self, name: str, args: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None,
                  timeout: float | None = None, wait_timeout: float = DEFAULT_WAIT_S) -> Any:
        return await self._drive(self._flows.run(name, args or {}, key=idempotency_key, timeout=timeout,
                                                 wait_timeout=wait_timeout))

    async def call_async(self, name: str, /, **args: Any) -> AwaitableTask:
        return await self.submit(name, args)

    async def submit(self, name: str, args: Mapping[str, Any] | None = None, *,
                     idempotency_key: str | None = None, timeout: float | None = None) -> AwaitableTask:
        submitted = await self._drive(self._flows.submit(name, args or {}, key=idempotency_key, timeout=timeout))
        return AwaitableTask(self, submitted)

    async def submit_many(self, name: str, items: Iterable[Mapping[str, Any]], *,
                          idempotency_key: str | None = None,
                          chunk_size: int = DEFAULT_CHUNK_SIZE) -> list[AwaitableTask]:
        try:
            submitted = await self._drive(self._flows.submit_many(name, [dict(i) for i in items],
                                                                  key=idempotency_key, chunk_size=chunk_size))
        except NeutrinoClientError as exc:
            exc.submitted = [AwaitableTask(self, s) for s in exc.submitted]
            raise
        return [AwaitableTask(self, s) for s in submitted]

    async def get_task(self, task_id: str) -> TaskInfo:
        return await self._drive(self._flows.get(str(task_id)))

    async def wait(self, task_id: str, timeout: float = DEFAULT_WAIT_S) -> Any:
        return await self._drive(self._flows.wait(str(task_id), timeout=timeout))

    async def cancel(self, task_id: str) -> TaskInfo:
        return await self._drive(self._flows.cancel(str(task_id)))

    async def retry(self, task_id: str, *, idempotency_key: str | None = None) -> AwaitableTask:
        return AwaitableTask(self, await self._drive(self._flows.retry(str(task_id), key=idempotency_key)))

    async def list_tasks(self, *, status: str | None = None, function: str | None = None, pool: str | None = None,
                         mode: str | None = None, limit: int = 50, cursor: str | None = None) -> TaskPage:
        return await self._drive(self._flows.list_page(status=status, function=function, pool=pool, mode=mode,
                                                  limit=limit, cursor=cursor))

    async def iter_tasks(self, *, status: str | None = None, function: str | None = None, pool: str | None = None,
                         mode: str | None = None, page_size: int = 200) -> AsyncIterator[TaskInfo]:
        cursor: str | None = None
        while True:
            page = await self.list_tasks(status=status, function=function, pool=pool, mode=mode, limit=page_size,
                                         cursor=cursor)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def _drive(self, flow: _Flow[T]) -> T:
        try:
            request = next(flow)
            while True:
                try:
                    reply = await self._send(request)
                except NeutrinoClientError as exc:
                    request = flow.throw(exc)
                    continue
                request = flow.send(reply)
        except StopIteration as stop:
            return stop.value

    async def _send(self, request: _Request) -> _Reply:
        timeout_s, kwargs = _http_kwargs(request, self.timeout)
        attempt = 0
        while True:
            try:
                response = await self._http.request(request.method, request.path, **kwargs)
            except httpx.TransportError as exc:
                if attempt < self.submit_retries and _may_resend(request, exc):
                    attempt += 1
                    await asyncio.sleep(_backoff_s(attempt))
                    continue
                raise _transport_error(request, exc, self.base_url, timeout_s) from exc
            return _reply(request, response)


class AwaitableTask:
    """A task submitted through `AsyncNeutrinoClient`; the methods of `AsyncTask`, as coroutines."""

    def __init__(self, client: AsyncNeutrinoClient, submitted: _Submitted) -> None:
        self._client = client
        self.id = submitted.task_id
        self.function_name = submitted.function_name
        self._submitted = submitted

    def __repr__(self) -> str:
        return f"<AwaitableTask {self.function_name or 'task'} {self.id}>"

    async def info(self) -> TaskInfo:
        return await self._client.get_task(self.id)

    async def status(self) -> str:
        return (await self.info()).status

    async def wait(self, timeout: float = DEFAULT_WAIT_S) -> Any:
        if self._submitted.status == "completed":
            return self._submitted.result
        return await self._client.wait(self.id, timeout=timeout)

    async def cancel(self) -> TaskInfo:
        return await self._client.cancel(self.id)

    async def retry(self) -> AwaitableTask:
        return await self._client.retry(self.id)
