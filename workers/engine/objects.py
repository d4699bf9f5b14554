"""Large results as objects in the JetStream object store, and the references task rows hold instead.

The path of a large result, and what each step holds in memory:

  1. the child (`workers.engine.spool`): a `neutrino.File` is passed on by its path (nothing read); `bytes` are
     written to a spool file; a JSON result whose text is over the inline threshold is written to a spool
     file (the JSON text was built in memory: the task built the value there already). The pipe to the
     parent carries only a small marker (`SPOOL_KEY`) with the path.
  2. the worker (`store_spooled`): streams the file into the object store in chunks of 128 KiB
     (nats-py's `ObjectStore.put` reading a file), hashing on the way; one chunk in memory at a time.
     A spool file is deleted afterwards; a task's own `File` is left alone.
  3. the row's `result` is a reference (`OBJECT_KEY`: bucket, name, size, sha256, content type, file name).
  4. the HTTP server (`iter_chunks`) reads the object chunk by chunk with direct get requests on
     the process's NATS connection and streams each to the caller: one chunk in memory per download.

Objects live in one bucket beside the task stream (`ensure_bucket`), with a TTL that follows task
retention, so an object does not outlive its row by much (it may by up to the TTL: a row deleted early,
e.g. by a bulk delete, leaves its object until the TTL). Imports no Django.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from nats.js.api import ObjectMeta, ObjectStoreConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError, NotFoundError

from workers.engine.spool import BYTES_TYPE, discard

BUCKET = "NEUTRINO_RESULTS"
OBJECT_KEY = "$neutrino_object"  # a row's result: a reference to a stored object


# ---- the worker: spool file -> object store ---------------------------------------------------------


class _Hashing(io.RawIOBase):
    """A file read through `readinto`, hashed on the way (one pass: the put and the sha256 together)."""

    def __init__(self, f: io.BufferedReader) -> None:
        self._f = f
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._f.readinto(buffer)
        if n:
            self.sha256.update(memoryview(buffer)[:n])
        return n or 0


async def store_spooled(js: JetStreamContext, marker: dict[str, Any], *, name: str) -> dict[str, Any]:
    """Stream the marker's file into the bucket as `name`; the reference a row stores (`OBJECT_KEY`).

    Deletes a spool file once stored (or failed); a task's own `File` is left where it is.
    """
    path = str(marker["path"])
    try:
        store = await js.object_store(BUCKET)
        with open(path, "rb") as f:
            reader = _Hashing(f)
            info = await store.put(name, reader, meta=ObjectMeta(name=name))  # type: ignore[arg-type]
    finally:
        discard(marker)
    return {OBJECT_KEY: {
        "bucket": BUCKET, "name": name, "size": info.size, "sha256": reader.sha256.hexdigest(),
        "content_type": str(marker.get("content_type") or BYTES_TYPE),
        "filename": str(marker.get("filename") or name),
    }}


async def ensure_bucket(js: JetStreamContext, *, ttl_s: float, replicas: int = 1) -> None:
    """Create the results bucket (file storage; `ttl_s` 0: objects kept until deleted) if it is missing."""
    try:
        await js.object_store(BUCKET)
        return
    except (BucketNotFoundError, NotFoundError):
        pass
    try:
        await js.create_object_store(BUCKET, config=ObjectStoreConfig(
            description="Neutrino task results too large for the task table",
            ttl=ttl_s or None, storage=StorageType.FILE, replicas=replicas,
        ))
    except Exception:
        # Another process created it a moment before (perhaps with another TTL): that one serves. Still
        # missing means the create really failed: raise what the lookup says.
        await js.object_store(BUCKET)


# ---- the HTTP server: object store -> response, chunk by chunk --------------------------------------


@dataclass(frozen=True)
class ObjectRef:
    """A stored result as a row refers to it."""

    bucket: str
    name: str
    size: int
    sha256: str
    content_type: str
    filename: str

    @classmethod
    def of(cls, result: Any) -> ObjectRef | None:
        """The reference in a row's result, or None when the result is an ordinary value."""
        if not (isinstance(result, dict) and len(result) == 1 and isinstance(result.get(OBJECT_KEY), dict)):
            return None
        ref = result[OBJECT_KEY]
        try:
            return cls(bucket=str(ref["bucket"]), name=str(ref["name"]), size=int(ref["size"]),
                       sha256=str(ref["sha256"]), content_type=str(ref["content_type"]),
                       filename=str(ref.get("filename") or ref["name"]))
        except (KeyError, TypeError, ValueError):
            return None


# call(coro_factory(js) , timeout_s): runs a JetStream call on the process's connection (`Broker.call`).
JsCall = Callable[[Callable[[JetStreamContext], Any], float], Any]


def iter_chunks(call: JsCall, ref: ObjectRef, *, timeout_s: float = 10.0) -> Iterator[bytes]:
    """The object's bytes, one stored chunk (128 KiB) at a time: each is one direct get (raw bytes; a
    `STREAM.MSG.GET` would send it base64 in JSON, at half the speed).

    Raises `NotFoundError` (nats-py) when the object is gone (expired, deleted); a chunk missing midway
    ends the iteration with the same error, after what was sent (a caller sees a short body).
    """
    stream = f"OBJ_{ref.bucket}"

    async def info(js: JetStreamContext) -> Any:
        return await (await js.object_store(ref.bucket)).get_info(ref.name)

    meta = call(info, timeout_s)
    subject = f"$O.{ref.bucket}.C.{meta.nuid}"
    seq = 0
    for _ in range(meta.chunks or 0):
        start = seq + 1

        async def get(js: JetStreamContext, start: int = start) -> Any:
            return await js.get_msg(stream, seq=start, subject=subject, next=True, direct=True)

        msg = call(get, timeout_s)
        seq = msg.seq
        yield msg.data or b""

