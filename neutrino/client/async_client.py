"""The asyncio client, `AsyncNeutrinoClient`, and its task handle, `AwaitableTask`."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
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


class AsyncNeutrinoClient(ClientBase):
    """The same client for asyncio: every operation is a coroutine; handles are `AwaitableTask`s."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = DEFAULT_TIMEOUT_S, *,
                 submit_retries: int = DEFAULT_SUBMIT_RETRIES, headers: Mapping[str, str] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(base_url, timeout, submit_retries)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=default_headers(token, headers),
                                       timeout=timeout, transport=transport)

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
                     idempotency_key: str | None = None, timeout: float | None = None,
                     delay_s: float | None = None, run_at: datetime | str | None = None,
                     expires_s: float | None = None, expires_at: datetime | str | None = None,
                     callback_url: str | None = None, priority: str | None = None,
                     unique_for_s: float | None = None) -> AwaitableTask:
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
        submitted = await self._drive(self._flows.submit(name, args or {}, key=idempotency_key, timeout=timeout,
                                                         timing=timing, callback_url=callback_url))
        return AwaitableTask(self, submitted)

    async def submit_many(self, name: str, items: Iterable[Mapping[str, Any]], *,
                          idempotency_key: str | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                          delay_s: float | None = None, run_at: datetime | str | None = None,
                          expires_s: float | None = None,
                          expires_at: datetime | str | None = None,
                          priority: str | None = None) -> list[AwaitableTask]:
        timing = {**timing_fields(delay_s=delay_s, run_at=run_at, expires_s=expires_s, expires_at=expires_at),
                  **flow_fields(priority=priority)}
        try:
            submitted = await self._drive(self._flows.submit_many(name, [dict(i) for i in items],
                                                                  key=idempotency_key, chunk_size=chunk_size,
                                                                  timing=timing))
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

    async def retry(self, task_id: str, *, args: Mapping[str, Any] | None = None, timeout_ms: int | None = None,
              pool: str | None = None, idempotency_key: str | None = None) -> AwaitableTask:
        """Run the task again as a new task: as it was, or with other `args`, `timeout_ms` or `pool`
        (queued tasks), which the new task records as its `retry_changes`."""
        return AwaitableTask(self, await self._drive(self._flows.retry(str(task_id), key=idempotency_key, args=args,
                                                        timeout_ms=timeout_ms, pool=pool)))

    async def download_result(self, task_id: str, path: str | os.PathLike[str], *,
                              timeout: float | None = None) -> DownloadedResult:
        """Stream the result of completed task `task_id` into the file `path`; see
        `NeutrinoClient.download_result`. The file is written with plain (blocking) writes of 64 KiB."""
        request = Request("GET", f"{task_path(str(task_id))}/result", f"download_result({str(task_id)!r})",
                          resend_ok=True)
        async with self._http.stream("GET", request.path, timeout=timeout or self.timeout) as response:
            if response.status_code >= 400:
                await response.aread()
                to_reply(request, response)  # raises the error the answer calls for
            with ResultFile(path, response, request.call) as target:
                async for chunk in response.aiter_raw(CHUNK_BYTES):
                    target.write(chunk)
        return target.result()

    async def logs(self, task_id: str, attempt: int | None = None) -> TaskLog:
        """What an attempt of the task wrote (print, logging, ...); the latest attempt by default."""
        return await self._drive(self._flows.logs(str(task_id), attempt=attempt))

    async def run_now(self, task_id: str) -> TaskInfo:
        return await self._drive(self._flows.run_now(str(task_id)))

    async def list_tasks(self, *, status: str | None = None, function: str | None = None, pool: str | None = None,
                         mode: str | None = None, limit: int = 50, cursor: str | None = None,
                         fields: Sequence[str] = ()) -> TaskPage:
        return await self._drive(self._flows.list_page(status=status, function=function, pool=pool, mode=mode,
                                                       limit=limit, cursor=cursor, fields=fields))

    async def iter_tasks(self, *, status: str | None = None, function: str | None = None, pool: str | None = None,
                         mode: str | None = None, page_size: int = MAX_PAGE,
                         fields: Sequence[str] = ()) -> AsyncIterator[TaskInfo]:
        cursor: str | None = None
        while True:
            page = await self.list_tasks(status=status, function=function, pool=pool, mode=mode, limit=page_size,
                                         cursor=cursor, fields=fields)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # Schedules (admin tokens; neutrino.client.schedules) ----------------------------------------------

    async def list_schedules(self, *, task: str | None = None) -> list[ScheduleInfo]:
        """Every schedule by name (`task`: only that task's)."""
        return await self._drive(self._schedules.list_all(task=task))

    async def get_schedule(self, name: str) -> ScheduleInfo:
        """One schedule, with its next 5 runs (`next_runs`) and its last fire."""
        return await self._drive(self._schedules.get(name))

    async def create_schedule(self, name: str, task: str, *, cron: str | None = None,
                              interval_s: int | None = None, args: Mapping[str, Any] | None = None,
                              timezone: str = "UTC", missed: str = "skip", catchup_max: int = 10,
                              enabled: bool = True, description: str = "") -> ScheduleInfo:
        """Fire async/gpu task `task` on `cron` (5 fields or an @-name) or every `interval_s` seconds, in `timezone`."""
        return await self._drive(self._schedules.create(name, task, schedule_fields(
            cron=cron, interval_s=interval_s, args=args, timezone=timezone, missed=missed, catchup_max=catchup_max,
            enabled=enabled, description=description)))

    async def update_schedule(self, name: str, **changes: Any) -> ScheduleInfo:
        """Change some fields (`task`, `args`, `cron`, `interval_s`, `timezone`, `missed`, ...)."""
        return await self._drive(self._schedules.update(name, changes))

    async def pause_schedule(self, name: str) -> ScheduleInfo:
        return await self._drive(self._schedules.act(name, "pause"))

    async def resume_schedule(self, name: str) -> ScheduleInfo:
        """It fires again from its next slot (the pause's slots are not made up)."""
        return await self._drive(self._schedules.act(name, "resume"))

    async def run_schedule(self, name: str) -> AwaitableTask:
        """Fire the schedule's task once, now; returns the task's handle."""
        return AwaitableTask(self, await self._drive(self._schedules.run(name)))

    async def delete_schedule(self, name: str) -> None:
        await self._drive(self._schedules.delete(name))

    async def schedule_fires(self, name: str, *, limit: int = 50, before: str | None = None) -> list[ScheduleFire]:
        """Its fires, newest slot first, with their tasks' statuses (`before`: a slot time, for older ones)."""
        return await self._drive(self._schedules.fires(name, limit=limit, before=before))

    async def group(self, name: str, items: Iterable[Mapping[str, Any]], *, then: str | None = None,
                    then_args: Mapping[str, Any] | None = None, policy: str = "all") -> GroupInfo:
        """See `NeutrinoClient.group`."""
        return await self._drive(self._flows.group(name, [dict(i) for i in items], then=then, then_args=then_args,
                                                   policy=policy))

    async def chain(self, steps: Sequence[tuple[str, Mapping[str, Any]] | str]) -> GroupInfo:
        """See `NeutrinoClient.chain`."""
        return await self._drive(self._flows.chain([(s, {}) if isinstance(s, str) else (s[0], dict(s[1]))
                                                    for s in steps]))

    async def get_group(self, group_id: str) -> GroupInfo:
        return await self._drive(self._flows.get_group(str(group_id)))

    async def cancel_group(self, group_id: str) -> GroupInfo:
        return await self._drive(self._flows.cancel_group(str(group_id)))

    async def wait_group(self, group_id: str, timeout: float = DEFAULT_WAIT_S) -> Any:
        """See `NeutrinoClient.wait_group`."""
        return await self._drive(self._flows.wait_group(str(group_id), timeout=timeout))

    async def bulk(self, filter: Mapping[str, Any], action: str, *, expected_count: int | None = None) -> BulkInfo:
        """See `NeutrinoClient.bulk`."""
        return await self._drive(self._flows.bulk(filter, action, expected_count=expected_count))

    async def bulk_status(self, bulk_id: str) -> BulkInfo:
        return await self._drive(self._flows.bulk_status(str(bulk_id)))

    async def bulk_stop(self, bulk_id: str) -> BulkInfo:
        return await self._drive(self._flows.bulk_stop(str(bulk_id)))

    async def _drive(self, flow: Flow[T]) -> T:
        step = advance(flow, None)
        while not isinstance(step, Done):
            outcome: Reply | NeutrinoClientError
            try:
                outcome = await self._send(step)
            except NeutrinoClientError as exc:
                outcome = exc
            step = advance(flow, outcome)
        return step.value

    async def _send(self, request: Request) -> Reply:
        if request.method == SLEEP:  # a flow's pause between polls: no request
            await asyncio.sleep(request.timeout_s or 0.0)
            return Reply(200, None)
        timeout_s, kwargs = http_kwargs(request, self.timeout)
        resends = 0
        while True:
            try:
                response = await self._http.request(request.method, request.path, **kwargs)
            except httpx.TransportError as exc:
                resends += 1
                await asyncio.sleep(self._pause_before_resend_s(request, exc, resends, timeout_s))
                continue
            reply = to_reply(request, response)
            await asyncio.sleep(pause_after_s(response))
            return reply


class AwaitableTask(HandleBase):
    """A task submitted through `AsyncNeutrinoClient`; the methods of `AsyncTask`, as coroutines."""

    def __init__(self, client: AsyncNeutrinoClient, submitted: Submitted) -> None:
        super().__init__(submitted)
        self._client = client

    async def info(self) -> TaskInfo:
        return await self._client.get_task(self.id)

    async def status(self) -> str:
        return (await self.info()).status

    async def wait(self, timeout: float = DEFAULT_WAIT_S) -> Any:
        if self._submitted.status == "completed" and not self.deduplicated:  # a duplicate carries no result
            return self._submitted.result
        return await self._client.wait(self.id, timeout=timeout)

    async def cancel(self) -> TaskInfo:
        return await self._client.cancel(self.id)

    async def retry(self) -> AwaitableTask:
        return await self._client.retry(self.id)

    async def run_now(self) -> TaskInfo:
        return await self._client.run_now(self.id)
