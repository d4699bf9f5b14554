"""The Python client of a Neutrino server (httpx; imports no Django).

    from neutrino import NeutrinoClient

    client = NeutrinoClient("http://127.0.0.1:8000", token="ntr_...")
    client.call_sync("add", a=1, b=2)                             # -> 3, or raises
    handle = client.call_async("generate_report", dataset="q3")   # -> AsyncTask
    handle.id; handle.status(); handle.wait(timeout=300); handle.cancel(); handle.retry()
    later = client.submit("generate_report", {"dataset": "q4"}, delay_s=3600, expires_s=7200)  # scheduled
    later.run_now()                                                # queue it at once instead
    client.submit_many("generate_report", [{"dataset": d} for d in ("q1", "q2")])   # one request
    client.get_task(task_id); client.list_tasks(status="failed", function="add")
    client.create_schedule("nightly", "generate_report", cron="0 3 * * *", timezone="Europe/Paris",
                           args={"dataset": "q3"})                # admin token; see docs/schedules.md

    bulk = client.bulk({"status": "failed", "function": "add"}, "retry")   # admin token; in the background
    client.bulk_status(bulk.id).done; client.bulk_stop(bulk.id)

    group = client.group("square", [{"x": x} for x in range(100)], then="total")  # fan-out, fan-in
    client.wait_group(group.id)                                   # -> total(results=[0, 1, 4, ...])
    chain = client.chain([("fetch", {"url": u}), "parse", "store"])   # each result passed on as `result`

`AsyncNeutrinoClient` is the same for asyncio (`await client.call_sync(...)`; its handles are
`AwaitableTask`s). Both are context managers; `close()` frees the connection pool.

Exceptions. Every one carries `.call` (what was called), `.status_code` and `.body` (what the server
answered, when it answered) and `.task_id` (when a task was made); its message names both. They form
a small tree under `NeutrinoClientError`, drawn at the top of `neutrino.client.errors`.

Timeouts. Every request has one: `timeout` (30 s by default) for each request, and `wait(timeout=300)`
for the whole wait, made of long-polls (`GET /tasks/<id>?wait=`) of at most 60 s each.

Retries. Submissions (`call_sync`, `call_async`, `submit_many`, `retry`) carry an `Idempotency-Key`,
one uuid4 per logical submit, and are sent again with the same key after a connection error
(`submit_retries`, 3 by default), so a retried submit never makes a second task: the server answers
a repeated key with the task the first request made. Reads are retried the same way. Nothing is
retried after the server answered: a 429 is raised with its `retry_after` for the caller to decide.

The package, by job: `errors` (the exceptions), `models` (`TaskInfo`, `TaskPage`, `TaskLog`), `flows` (each
operation as the requests it makes, written once for both clients), `wire` (requests and answers as
HTTP), `base` (what both clients share), `sync_client` and `async_client` (the two clients).
"""

from __future__ import annotations

from neutrino.client.async_client import AsyncNeutrinoClient, AwaitableTask
from neutrino.client.context import current_task_id
from neutrino.client.errors import (
    Conflict,
    GatewayUnavailable,
    NeutrinoClientError,
    Overloaded,
    TaskCancelled,
    TaskExpired,
    TaskFailed,
    TaskNotFound,
    TaskTimeout,
    Unauthorized,
    ValidationError,
)
from neutrino.client.models import BulkInfo, DownloadedResult, GroupInfo, LogLine, TaskInfo, TaskLog, TaskPage
from neutrino.client.schedules import ScheduleFire, ScheduleInfo
from neutrino.client.sync_client import AsyncTask, NeutrinoClient

__all__ = [
    "AsyncNeutrinoClient",
    "AsyncTask",
    "AwaitableTask",
    "BulkInfo",
    "Conflict",
    "DownloadedResult",
    "GatewayUnavailable",
    "GroupInfo",
    "LogLine",
    "NeutrinoClient",
    "NeutrinoClientError",
    "Overloaded",
    "ScheduleFire",
    "ScheduleInfo",
    "TaskCancelled",
    "TaskExpired",
    "TaskFailed",
    "TaskInfo",
    "TaskLog",
    "TaskNotFound",
    "TaskPage",
    "TaskTimeout",
    "Unauthorized",
    "ValidationError",
    "current_task_id",
]
