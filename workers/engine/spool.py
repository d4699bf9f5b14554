"""The child's side of large results: a result that goes to the object store leaves the child as a file.

See `workers.engine.objects` for the whole path. Imports no NATS (it runs in every child).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from typing import Any

from neutrino.files import File

SPOOL_DIR_PREFIX = "neutrino-spool-"  # the spool directories' names: only files in one are ever deleted
SPOOL_KEY = "$neutrino_spool"  # the child's reply: a result waiting in a file (never stored)
JSON_TYPE = "application/json"
BYTES_TYPE = "application/octet-stream"


class ObjectTooLarge(ValueError):
    """The result is over the per-object limit (`NEUTRINO_MAX_OBJECT_BYTES`)."""


# ---- the child: a result that goes to a file -------------------------------------------------------


def spool_result(result: Any, *, spool_dir: str, inline_bytes: int, max_object_bytes: int,
                 task_id: str, encode: Callable[[Any, int], str]) -> str:
    """The reply text for a result: the marker of a file in `spool_dir`, or the result's JSON when it is
    at most `inline_bytes` (encoded once either way).

    `encode(result, limit)` is the child's JSON encoder (its errors are ValueErrors that say why).
    Raises ValueError (ObjectTooLarge) when the result cannot be stored.
    """
    if isinstance(result, File):
        path = os.path.abspath(os.fspath(result.path))
        try:
            size = os.stat(path).st_size
        except OSError as exc:
            raise ValueError(f"is a neutrino.File that cannot be read: {exc}") from None
        _check_size(size, max_object_bytes)
        return _marker(path, result.content_type, result.filename, size, spooled=False)
    if isinstance(result, bytes | bytearray | memoryview):
        data = bytes(result) if isinstance(result, memoryview) else result
        _check_size(len(data), max_object_bytes)
        return _marker(_write_spool(spool_dir, task_id, data), BYTES_TYPE, f"{task_id}.bin", len(data), spooled=True)
    text = encode(result, max_object_bytes)
    if len(text) * 4 <= inline_bytes:  # at most 4 bytes a character: inline without counting its bytes
        return text
    data = text.encode("utf-8")
    if len(data) <= inline_bytes:
        return text
    return _marker(_write_spool(spool_dir, task_id, data), JSON_TYPE, f"{task_id}.json", len(data), spooled=True)


def _check_size(size: int, max_object_bytes: int) -> None:
    if size > max_object_bytes:
        raise ObjectTooLarge(f"is too large: {size:,} bytes, over the object limit of {max_object_bytes:,} bytes")


def _write_spool(spool_dir: str, task_id: str, data: bytes | bytearray) -> str:
    path = os.path.join(spool_dir, f"{task_id}-{secrets.token_hex(4)}")
    with open(path, "wb") as f:
        f.write(data)
    return path


def _marker(path: str, content_type: str, filename: str, size: int, *, spooled: bool) -> str:
    return json.dumps({SPOOL_KEY: {"path": path, "content_type": content_type, "filename": filename,
                                   "size": size, "spooled": spooled}})


def spooled(value: Any) -> dict[str, Any] | None:
    """The spool marker in an executor result, or None for an ordinary result."""
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get(SPOOL_KEY), dict):
        return value[SPOOL_KEY]
    return None


def discard(marker: dict[str, Any]) -> None:
    """Delete a spool file once stored or given up (a task's own `File` is left alone). Only a file in a
    spool directory is deleted: a task that returned a dict shaped like a marker cannot make the worker
    delete anything else."""
    path = str(marker.get("path", ""))
    if marker.get("spooled") and os.path.basename(os.path.dirname(path)).startswith(SPOOL_DIR_PREFIX):
        try:
            os.unlink(path)
        except OSError:
            pass
