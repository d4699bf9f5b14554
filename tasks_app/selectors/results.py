"""Reading a task's result as a download: a stored object streamed from the object store, or the JSON.

The object is read chunk by chunk on the process's NATS connection (`Broker.call`), so a download holds
one chunk (128 KiB) in memory whatever the object's size (`workers.engine.objects`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.http import StreamingHttpResponse
from nats.js.errors import NotFoundError

from tasks_app.core.errors import BrokerUnavailable, Conflict, TaskNotFound
from tasks_app.core.ports import Broker
from tasks_app.models import Task, TaskStatus
from workers.engine.objects import BUCKET, OBJECT_KEY, ObjectRef, iter_chunks


def result_url(task_id: object) -> str:
    """Where a task's result is downloaded (`GET /tasks/<id>/result`)."""
    return f"/tasks/{task_id}/result"


def result_shown(task: Task) -> Any:
    """A task's result as the API shows it: a stored object as its reference and download link."""
    return value_shown(task.result, task.id)


def value_shown(result: Any, task_id: object) -> Any:
    """`result` as the API shows it (see result_shown), for a result not yet in a row (a sync answer)."""
    ref = ObjectRef.of(result)
    if ref is None:
        return result
    return {OBJECT_KEY: {"size": ref.size, "sha256": ref.sha256, "content_type": ref.content_type,
                         "filename": ref.filename, "url": result_url(task_id)}}


@dataclass(frozen=True)
class ResultDownload:
    """What a download sends: the body's pieces, their type, total length and the file name."""

    chunks: Iterator[bytes]
    content_type: str
    size: int
    filename: str
    sha256: str


def task_result_download(*, task: Task, broker: Broker | None, timeout_s: float = 10.0) -> ResultDownload:
    """The completed task's result for download. Conflict while it has none; 503 without NATS."""
    if task.status != TaskStatus.COMPLETED:
        raise Conflict(f"task {task.id} is {task.status}: only a completed task has a result to download")
    ref = ObjectRef.of(task.result)
    if ref is None:
        body = json.dumps(task.result, ensure_ascii=False).encode()
        return ResultDownload(chunks=iter((body,)), content_type="application/json", size=len(body),
                              filename=f"{task.id}.json", sha256="")
    return object_download(ref=ref, task_id=task.id, broker=broker, timeout_s=timeout_s)


def sync_object_download(*, task_id: object, result_json: str, broker: Broker | None) -> ResultDownload | None:
    """The stored object a sync call just answered with (its reference as `value_shown` wrote it), for a
    caller that asked for the bytes themselves; None when the result came inline."""
    if not result_json.startswith('{"' + OBJECT_KEY + '"'):
        return None
    shown = json.loads(result_json)[OBJECT_KEY]
    ref = ObjectRef(bucket=BUCKET, name=str(task_id), size=int(shown["size"]), sha256=str(shown["sha256"]),
                    content_type=str(shown["content_type"]), filename=str(shown["filename"]))
    return object_download(ref=ref, task_id=task_id, broker=broker)


def object_download(*, ref: ObjectRef, task_id: object, broker: Broker | None,
                    timeout_s: float = 10.0) -> ResultDownload:
    """A stored object as a download; 404 once it is gone, 503 without NATS."""
    if broker is None:
        raise BrokerUnavailable("this server has no NATS connection (NEUTRINO_NATS_URL) to read the result from")

    def call(factory: Any, timeout: float) -> Any:
        return broker.call(lambda js, nc: factory(js), timeout_s=timeout)

    chunks = iter_chunks(call, ref, timeout_s=timeout_s)
    try:
        first = next(chunks, b"")  # the object's info and first chunk: a missing object is a 404, not a short body
    except NotFoundError:
        raise TaskNotFound(f"the result of task {task_id} is no longer stored (expired or deleted)") from None
    except Exception as exc:
        raise BrokerUnavailable(f"the result of task {task_id} cannot be read from NATS: {exc}") from None
    return ResultDownload(chunks=_prepend(first, chunks), content_type=ref.content_type, size=ref.size,
                          filename=ref.filename, sha256=ref.sha256)


SHA256_HEADER = "X-Neutrino-SHA256"
# What the dashboard shows inline: raster images only (an SVG carries scripts).
INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif"})


def download_response(download: ResultDownload, *, inline: bool = False) -> StreamingHttpResponse:
    """The HTTP answer that streams `download`: its type, length, checksum and a file name to save it as."""
    response = StreamingHttpResponse(download.chunks, content_type=download.content_type)
    response["Content-Length"] = str(download.size)
    safe_name = "".join(c for c in download.filename if c.isascii() and c.isprintable() and c not in '"\\;')
    response["Content-Disposition"] = f'{"inline" if inline else "attachment"}; filename="{safe_name or "result"}"'
    response["X-Content-Type-Options"] = "nosniff"
    if download.sha256:
        response[SHA256_HEADER] = download.sha256
    return response


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest
