"""The child's side: what a task writes goes into the shared log buffer (see `buffer`), a record a line.

`Capture.install()` runs once in the child, after the task modules loaded (what they print while loading
is not a task's, and stays on the server's console):
  * `sys.stdout` and `sys.stderr` become line-buffered text streams over the buffer (streams `stdout`,
    level INFO, and `stderr`, level ERROR). The text layer is CPython's own, so `print()` costs one
    Python call per line, not per argument;
  * a handler on the root logger writes every record (`logging`, its own level; the root logger is set
    to INFO if it was left at its WARNING default, so a task's `logger.info` shows);
  * `neutrino.log(...)` writes through `Capture.write` (stream `neutrino`);
  * file descriptors 1 and 2 point at the plain file the parent reads as `raw`.

`end_task()` pushes out a last line that has no newline yet; the child calls it before it replies, so the
parent's final read sees everything the task wrote.
"""

from __future__ import annotations

import io
import logging
import mmap
import os
import sys
import time
from typing import Any

from neutrino.tasklog import set_sink
from workers.engine.logs.buffer import DROPPED, HEADER_BYTES
from workers.engine.logs.format import RECORD_B, encode_record

# A line longer than this is written in pieces (a progress bar that never prints a newline).
MAX_PARTIAL_BYTES = 64 * 1024


class Capture:
    """The child's writer into its log buffer. Thread-safe: task threads and logging may write at once."""

    _full: bool
    _dropped: int

    def __init__(self, buffer_path: str, raw_path: str, max_bytes: int) -> None:
        fd = os.open(buffer_path, os.O_RDWR)
        try:
            self._mm = mmap.mmap(fd, HEADER_BYTES + max_bytes)
        finally:
            os.close(fd)
        self._mm.seek(HEADER_BYTES)
        self._full = False
        self._dropped = 0
        self._raw_path = raw_path
        self._streams: list[_LineSink] = []

    def install(self) -> None:
        raw = os.open(self._raw_path, os.O_WRONLY | os.O_APPEND)
        os.dup2(raw, 1)
        os.dup2(raw, 2)
        os.close(raw)
        for name, level in (("stdout", "INFO"), ("stderr", "ERROR")):
            sink = _LineSink(self, level, name)
            self._streams.append(sink)
            text = io.TextIOWrapper(sink, encoding="utf-8", errors="backslashreplace", line_buffering=True)  # type: ignore[type-var]
            setattr(sys, name, text)
        root = logging.getLogger()
        if root.level == logging.WARNING:
            root.setLevel(logging.INFO)
        handler = _Handler(self)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        root.addHandler(handler)
        set_sink(self.write)

    def write(self, level: str, stream: str, text: str, ts: float | None = None) -> None:
        """One record (`text` may span lines)."""
        self.emit(encode_record(time.time() if ts is None else ts, level, stream, text))

    def emit(self, data: bytes) -> None:
        """Append whole records at the buffer's write position; past the cap, count them in the header.

        No lock: `mmap.write` copies and moves the position in one call under the GIL, so records from
        several threads never interleave. A NUL byte marks where the records end, so none may hold one."""
        if b"\0" in data:
            data = data.replace(b"\0", b"\\x00")
        if not self._full:
            try:
                self._mm.write(data)
                return
            except ValueError:  # no room left: from here on everything is counted, nothing kept
                self._full = True
        self._dropped += len(data)
        DROPPED.pack_into(self._mm, 0, self._dropped)

    def begin_task(self) -> None:
        """A task starts: write from the start of the buffer again (the parent emptied it)."""
        self._mm.seek(HEADER_BYTES)
        self._full = False
        self._dropped = 0

    def end_task(self) -> None:
        """The task returned: what it left in the text streams goes out, a last line without newline too."""
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name, None)
            try:
                if stream is not None:
                    stream.flush()
            except Exception:  # the task replaced or closed it
                pass
        for sink in self._streams:
            sink.flush_partial()


class _LineSink(io.RawIOBase):
    """The bytes under one text stream: whole lines become records, a partial line waits for its end."""

    def __init__(self, capture: Capture, level: str, stream: str) -> None:
        super().__init__()
        self._capture = capture
        self._head = f" {level} {stream} ".encode()
        self._partial = b""
        self._stamped = 0.0
        self._prefix = b""

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        # The usual call: one whole line (the text layer flushes at each newline).
        if not self._partial and b[-1:] == b"\n" and b.count(b"\n") == 1:
            now = time.time()
            if now - self._stamped >= 0.001:  # the prefix's time text, made again at most once a millisecond
                self._stamped = now
                self._prefix = RECORD_B + b"%.3f" % now + self._head
            data = self._prefix + b
            capture = self._capture
            if not capture._full and b"\0" not in data:
                try:
                    capture._mm.write(data)
                    return len(b)
                except ValueError:
                    pass
            capture.emit(data)
            return len(b)
        return self._write_lines(bytes(b))

    def _write_lines(self, data: bytes) -> int:
        size = len(data)
        if self._partial:
            data, self._partial = self._partial + data, b""
        if not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            data, self._partial = data[:cut], data[cut:]
            if len(self._partial) > MAX_PARTIAL_BYTES:
                data, self._partial = data + self._partial + b"\n", b""
            if not data:
                return size
        head = RECORD_B + b"%.3f" % time.time() + self._head
        self._capture.emit(b"".join(head + line + b"\n" for line in data[:-1].split(b"\n")))
        return size

    def flush_partial(self) -> None:
        if self._partial:
            self._write_lines(b"\n")


class _Handler(logging.Handler):
    def __init__(self, capture: Capture) -> None:
        super().__init__()
        self._capture = capture

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._capture.write(record.levelname, "logging", text, record.created)
