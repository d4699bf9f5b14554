"""What the server answers about tasks, as the client hands it out: `TaskInfo`, `TaskPage` and `TaskLog`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FINISHED = frozenset({"completed", "failed", "cancelled", "expired"})


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
    run_at: str | None = None  # a delayed task: `scheduled` until then
    expires_at: str | None = None  # not started by then: `expired`
    duration_ms: float | None = None
    progress: float | None = None
    progress_message: str | None = None
    retry_of: str | None = None
    retry_changes: Mapping[str, Any] | None = None  # what a retry with changes changed: {field: {before, after}}
    cancel_requested: bool = False
    priority: str = "normal"  # the order its pool's workers take it in: high, normal, low
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


@dataclass(frozen=True)
class LogLine:
    """One record of a task's log: unix time, level, stream (stdout, stderr, logging, neutrino, raw), text."""

    ts: float
    level: str
    stream: str
    text: str


@dataclass(frozen=True)
class TaskLog:
    """What one attempt of a task wrote (`client.logs`), oldest first. When the server's cap left some out,
    `dropped_bytes` says how much and the last line says so too."""

    task_id: str
    attempt: int
    attempts: list[int]  # the attempts that have a log
    lines: list[LogLine]
    dropped_bytes: int

    @property
    def text(self) -> str:
        """The texts, a line each (what `print` wrote, without times and levels)."""
        return "".join(line.text + "\n" for line in self.lines)


BULK_FINISHED = frozenset({"done", "stopped", "failed"})


@dataclass(frozen=True)
class BulkInfo:
    """A bulk action (`POST /tasks/bulk`) as the server shows it: `total` tasks matched when it was asked
    for, `done` acted on, `failed` matched but not acted on (`note` says why)."""

    id: str
    action: str
    status: str  # queued, running, done, stopped or failed
    total: int = 0
    done: int = 0
    failed: int = 0
    filter: Mapping[str, str] = field(default_factory=dict)
    note: str | None = None
    stop_requested: bool = False
    created_by: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.status in BULK_FINISHED

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> BulkInfo:
        known = {name for name in cls.__dataclass_fields__ if name not in ("id", "raw")}
        values = {name: body[name] for name in known if name in body and body[name] is not None}
        return cls(id=str(body["bulk_id"]), raw=dict(body), **values)


@dataclass(frozen=True)
class GroupInfo:
    """A group or chain as `GET /groups/<id>` shows it: `counts` of its members by status, `fired` once
    the fan-in made its callback (`callback_task_id`); for a chain, `result_task_id` is the task whose
    result is the chain's, once its last step exists."""

    id: str
    function_name: str = ""
    size: int = 0
    then: str | None = None
    policy: str = "all"
    counts: Mapping[str, int] = field(default_factory=dict)
    finished: int = 0
    fired: bool = False
    callback_task_id: str | None = None
    parent_id: str | None = None
    task_ids: list[str] = field(default_factory=list)  # the members, when the submit answered them
    first_task_id: str | None = None  # a chain's first step
    result_task_id: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_chain(self) -> bool:
        return "chain" in self.raw or self.first_task_id is not None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> GroupInfo:
        known = {name for name in cls.__dataclass_fields__ if name not in ("id", "raw", "result_task_id")}
        values = {name: body[name] for name in known if name in body and body[name] is not None}
        chain = body.get("chain") or {}
        return cls(id=str(body["group_id"]), raw=dict(body), result_task_id=chain.get("result_task_id"), **values)


@dataclass(frozen=True)
class DownloadedResult:
    """A result `download_result` wrote to a file: where, how many bytes, their sha256 and content type."""

    path: str
    size: int
    sha256: str
    content_type: str
