"""The blocking client, `NeutrinoClient`, and its task handle, `AsyncTask`."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import httpx

from neutrino.client.base import DEFAULT_SUBMIT_RETRIES, DEFAULT_TIMEOUT_S, ClientBase, HandleBase
from neutrino.client.downloads import CHUNK_BYTES, ResultFile
from neutrino.client.errors import NeutrinoClientError
from neutrino.client.flows import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_WAIT_S,
    MAX_PAGE,
    SLEEP,
    Done,
    Flow,
    Reply,
    Request,
    Submitted,
    advance,
    flow_fields,
    task_path,
    timing_fields,
)
from neutrino.client.models import BulkInfo, DownloadedResult, GroupInfo, TaskInfo, TaskLog, TaskPage
from neutrino.client.schedules import ScheduleFire, ScheduleInfo, schedule_fields
from neutrino.client.wire import default_headers, http_kwargs, pause_after_s, to_reply

T = TypeVar("T")


class NeutrinoClient(ClientBase):
    """A blocking client. `timeout` (seconds) bounds each request; `submit_retries` how often a submit
    is sent again after a connection error (same Idempotency-Key)."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = DEFAULT_TIMEOUT_S, *,
                 submit_retries: int = DEFAULT_SUBMIT_RETRIES, headers: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(base_url, timeout, submit_retries)
        self._http = httpx.Client(base_url=self.base_url, headers=default_headers(token, headers), timeout=timeout,
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
               timeout: float | None = None, delay_s: float | None = None, run_at: datetime | str | None = None,
               expires_s: float | None = None, expires_at: datetime | str | None = None,
               callback_url: str | None = None, priority: str | None = None,
               unique_for_s: float | None = None) -> AsyncTask:
        """`call_async` with options: a chosen `idempotency_key`, the request's `timeout`, and the task's timing.

        `delay_s` (seconds from now) or `run_at` (an aware datetime, or ISO 8601 with an offset) delays a
        queued task: it is `scheduled` until then, and a time already past queues it at once. `expires_s`
        or `expires_at` ends it `expired`, never run, if it has not started by then (counted from now, not
        from run_at; the task's own `expires_s` applies when neither is given). Sync tasks take none of them.
        These are keyword arguments of `submit`, not of `call_async`: `call_async(name, **args)` passes its
        keywords to the task, so the task's arguments go here in the `args` mapping. With `callback_url`,
        Neutrino POSTs the task's final state there once it finishes (a signed webhook; the server's
        NEUTRINO_WEBHOOK_ALLOWED_HOSTS decides which hosts). `priority` ("high", "normal", "low") orders it in
        its pool's backlog; `unique_for_s` answers a submit with the same arguments within that many seconds
        with the first task (the handle's `deduplicated` is then True). Both default to the task's own.
        """
        timing = {**timing_fields(delay_s=delay_s, run_at=run_at, expires_s=expires_s, expires_at=expires_at),
                  **flow_fields(priority=priority, unique_for_s=unique_for_s)}
        submitted = self._drive(self._flows.submit(name, args or {}, key=idempotency_key, timeout=timeout,
                                                   timing=timing, callback_url=callback_url))
        return AsyncTask(self, submitted)

    def submit_many(self, name: str, items: Iterable[Mapping[str, Any]], *, idempotency_key: str | None = None,
                    chunk_size: int = DEFAULT_CHUNK_SIZE, delay_s: float | None = None,
                    run_at: datetime | str | None = None, expires_s: float | None = None,
                    expires_at: datetime | str | None = None, priority: str | None = None) -> list[AsyncTask]:
        """Queue one task per args mapping, in order, `chunk_size` per request (all or nothing per request).

        The timing options and `priority` (as `submit`'s) apply to every task; `delay_s` counts from each request.
        When a later request fails, the exception's `.submitted` lists the handles already queued.
        """
        timing = {**timing_fields(delay_s=delay_s, run_at=run_at, expires_s=expires_s, expires_at=expires_at),
                  **flow_fields(priority=priority)}
        try:
            submitted = self._drive(self._flows.submit_many(name, [dict(i) for i in items], key=idempotency_key,
                                                            chunk_size=chunk_size, timing=timing))
        except NeutrinoClientError as exc:
            exc.submitted = [AsyncTask(self, s) for s in exc.submitted]
            raise
        return [AsyncTask(self, s) for s in submitted]

    def get_task(self, task_id: str) -> TaskInfo:
        return self._drive(self._flows.get(str(task_id)))

    def wait(self, task_id: str, timeout: float = DEFAULT_WAIT_S) -> Any:
        """The result of task `task_id` once it finishes; raises TaskFailed, TaskCancelled or TaskTimeout."""
        return self._drive(self._flows.wait(str(task_id), timeout=timeout))

    def download_result(self, task_id: str, path: str | os.PathLike[str], *,
                        timeout: float | None = None) -> DownloadedResult:
        """Stream the result of completed task `task_id` into the file `path` (`GET /tasks/<id>/result`).

        A stored object (a large result, bytes, a `neutrino.File`) arrives as its bytes, an inline result as
        its JSON; either way the body is written as it comes, never held whole in memory. The sha256 the
        server stored is checked: a mismatch or a short body raises NeutrinoClientError and leaves no file.
        `timeout` bounds each read (default: the client's timeout). Raises Conflict while the task has no
        result, TaskNotFound for an unknown task or an expired object.
        """
        request = Request("GET", f"{task_path(str(task_id))}/result", f"download_result({str(task_id)!r})",
                          resend_ok=True)
        with self._http.stream("GET", request.path, timeout=timeout or self.timeout) as response:
            if response.status_code >= 400:
                response.read()
                to_reply(request, response)  # raises the error the answer calls for
            with ResultFile(path, response, request.call) as target:
                for chunk in response.iter_raw(CHUNK_BYTES):
                    target.write(chunk)
        return target.result()

    def logs(self, task_id: str, attempt: int | None = None) -> TaskLog:
        """What an attempt of the task wrote (print, logging, ...); the latest attempt by default."""
        return self._drive(self._flows.logs(str(task_id), attempt=attempt))

    def cancel(self, task_id: str) -> TaskInfo:
        return self._drive(self._flows.cancel(str(task_id)))

    def retry(self, task_id: str, *, args: Mapping[str, Any] | None = None, timeout_ms: int | None = None,
              pool: str | None = None, idempotency_key: str | None = None) -> AsyncTask:
        """Run the task again as a new task: as it was, or with other `args`, `timeout_ms` or `pool`
        (queued tasks), which the new task records as its `retry_changes`."""
        return AsyncTask(self, self._drive(self._flows.retry(str(task_id), key=idempotency_key, args=args,
                                                        timeout_ms=timeout_ms, pool=pool)))

    def run_now(self, task_id: str) -> TaskInfo:
        """Queue a `scheduled` (delayed) task at once; Conflict when it is not scheduled (any more)."""
        return self._drive(self._flows.run_now(str(task_id)))

    def list_tasks(self, *, status: str | None = None, function: str | None = None, pool: str | None = None,
                   mode: str | None = None, limit: int = 50, cursor: str | None = None,
                   fields: Sequence[str] = ()) -> TaskPage:
        """A page of at most 100 tasks, newest first; `fields` adds args, result or traceback to the items."""
        return self._drive(self._flows.list_page(status=status, function=function, pool=pool, mode=mode,
                                                 limit=limit, cursor=cursor, fields=fields))

    def iter_tasks(self, *, status: str | None = None, function: str | None = None, pool: str | None = None,
                   mode: str | None = None, page_size: int = MAX_PAGE,
                   fields: Sequence[str] = ()) -> Iterator[TaskInfo]:
        """Every matching task, newest first, a page at a time."""
        cursor: str | None = None
        while True:
            page = self.list_tasks(status=status, function=function, pool=pool, mode=mode, limit=page_size,
                                   cursor=cursor, fields=fields)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # Schedules (admin tokens; neutrino.client.schedules) ----------------------------------------------

    def list_schedules(self, *, task: str | None = None) -> list[ScheduleInfo]:
        """Every schedule by name (`task`: only that task's)."""
        return self._drive(self._schedules.list_all(task=task))

    def get_schedule(self, name: str) -> ScheduleInfo:
        """One schedule, with its next 5 runs (`next_runs`) and its last fire."""
        return self._drive(self._schedules.get(name))

    def create_schedule(self, name: str, task: str, *, cron: str | None = None, interval_s: int | None = None,
                        args: Mapping[str, Any] | None = None, timezone: str = "UTC", missed: str = "skip",
                        catchup_max: int = 10, enabled: bool = True, description: str = "") -> ScheduleInfo:
        """Fire async/gpu task `task` on `cron` (5 fields or an @-name) or every `interval_s` seconds, in `timezone`."""
        return self._drive(self._schedules.create(name, task, schedule_fields(
            cron=cron, interval_s=interval_s, args=args, timezone=timezone, missed=missed, catchup_max=catchup_max,
            enabled=enabled, description=description)))

    def update_schedule(self, name: str, **changes: Any) -> ScheduleInfo:
        """Change some fields (`task`, `args`, `cron`, `interval_s`, `timezone`, `missed`, ...)."""
        return self._drive(self._schedules.update(name, changes))

    def pause_schedule(self, name: str) -> ScheduleInfo:
        return self._drive(self._schedules.act(name, "pause"))

    def resume_schedule(self, name: str) -> ScheduleInfo:
        """It fires again from its next slot (the pause's slots are not made up)."""
        return self._drive(self._schedules.act(name, "resume"))

    def run_schedule(self, name: str) -> AsyncTask:
        """Fire the schedule's task once, now; returns the task's handle."""
        return AsyncTask(self, self._drive(self._schedules.run(name)))

    def delete_schedule(self, name: str) -> None:
        self._drive(self._schedules.delete(name))

    def schedule_fires(self, name: str, *, limit: int = 50, before: str | None = None) -> list[ScheduleFire]:
        """Its fires, newest slot first, with their tasks' statuses (`before`: a slot time, for older ones)."""
        return self._drive(self._schedules.fires(name, limit=limit, before=before))

    def group(self, name: str, items: Iterable[Mapping[str, Any]], *, then: str | None = None,
              then_args: Mapping[str, Any] | None = None, policy: str = "all") -> GroupInfo:
        """Queue one task `name` per args mapping; once all have finished, `then` runs with `results=[...]`
        (item order, None where one did not complete) and its own `then_args`. Policy "all": the callback
        runs only if every task completed (else it ends failed, unrun); "collect": it always runs, and gets
        `failures=[{index, task_id, status, error_type, error}]` too. Inside a task, the group is its child.
        Not sent again after a connection error (groups take no Idempotency-Key yet)."""
        return self._drive(self._flows.group(name, [dict(i) for i in items], then=then, then_args=then_args,
                                             policy=policy))

    def chain(self, steps: Sequence[tuple[str, Mapping[str, Any]] | str]) -> GroupInfo:
        """Run tasks one after another: `[("fetch", {"url": u}), "parse", ("store", {"table": "t"})]`. Each
        step after the first gets the previous step's result as its argument `result`; `wait_group(info.id)`
        returns the last step's result."""
        return self._drive(self._flows.chain([(s, {}) if isinstance(s, str) else (s[0], dict(s[1]))
                                              for s in steps]))

    def get_group(self, group_id: str) -> GroupInfo:
        return self._drive(self._flows.get_group(str(group_id)))

    def cancel_group(self, group_id: str) -> GroupInfo:
        """Cancel the group's (chain's) unfinished tasks; its callback (later steps) ends cancelled, unrun."""
        return self._drive(self._flows.cancel_group(str(group_id)))

    def wait_group(self, group_id: str, timeout: float = DEFAULT_WAIT_S) -> Any:
        """The group's callback result (a chain's last result) once it has run; raises as `wait` does."""
        return self._drive(self._flows.wait_group(str(group_id), timeout=timeout))

    def bulk(self, filter: Mapping[str, Any], action: str, *, expected_count: int | None = None) -> BulkInfo:
        """Cancel, retry or delete every task `filter` matches (keys: status, function, pool, mode, error_type,
        error_contains, id_prefix, created_after, created_before), in the background; needs an admin token.
        With `expected_count`, Conflict (409, `.body["count"]`) when the filter matches another number now."""
        return self._drive(self._flows.bulk(filter, action, expected_count=expected_count))

    def bulk_status(self, bulk_id: str) -> BulkInfo:
        """A bulk action's progress: `status`, `total`, `done`, `failed`."""
        return self._drive(self._flows.bulk_status(str(bulk_id)))

    def bulk_stop(self, bulk_id: str) -> BulkInfo:
        """Stop a bulk action after its current chunk (one not started yet at once)."""
        return self._drive(self._flows.bulk_stop(str(bulk_id)))

    # The loop that sends a flow's requests ----------------------------------------------------------

    def _drive(self, flow: Flow[T]) -> T:
        step = advance(flow, None)
        while not isinstance(step, Done):
            outcome: Reply | NeutrinoClientError
            try:
                outcome = self._send(step)
            except NeutrinoClientError as exc:
                outcome = exc
            step = advance(flow, outcome)
        return step.value

    def _send(self, request: Request) -> Reply:
        if request.method == SLEEP:  # a flow's pause between polls: no request
            time.sleep(request.timeout_s or 0.0)
            return Reply(200, None)
        timeout_s, kwargs = http_kwargs(request, self.timeout)
        resends = 0
        while True:
            try:
                response = self._http.request(request.method, request.path, **kwargs)
            except httpx.TransportError as exc:
                resends += 1
                time.sleep(self._pause_before_resend_s(request, exc, resends, timeout_s))
                continue
            reply = to_reply(request, response)
            time.sleep(pause_after_s(response))
            return reply


class AsyncTask(HandleBase):
    """A task submitted through `NeutrinoClient`: poll it, wait for it, cancel or retry it."""

    def __init__(self, client: NeutrinoClient, submitted: Submitted) -> None:
        super().__init__(submitted)
        self._client = client

    def info(self) -> TaskInfo:
        return self._client.get_task(self.id)

    def status(self) -> str:
        """scheduled, pending, queued, running, completed, failed, cancelled or expired."""
        return self.info().status

    def wait(self, timeout: float = DEFAULT_WAIT_S) -> Any:
        """The result once the task finishes; raises TaskFailed, TaskCancelled or TaskTimeout."""
        if self._submitted.status == "completed" and not self.deduplicated:  # a duplicate carries no result
            return self._submitted.result
        return self._client.wait(self.id, timeout=timeout)

    def cancel(self) -> TaskInfo:
        """Cancel it (a queued task never runs, a running one is killed). Conflict if it already finished."""
        return self._client.cancel(self.id)

    def retry(self) -> AsyncTask:
        """Run it again as a new task (same arguments); returns the new task's handle."""
        return self._client.retry(self.id)

    def run_now(self) -> TaskInfo:
        """Queue it now if it is `scheduled` (delayed); Conflict otherwise."""
        return self._client.run_now(self.id)
