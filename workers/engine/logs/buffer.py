"""The parent's side of a child's log: the two files it shares with the child, and reading an attempt's
new lines out of them.

Each child gets, for its whole life:
  * a shared-memory file of HEADER_BYTES + `max_bytes`, mapped by both and zeroed before each attempt:
    the child appends records to it (`capture.Capture`), and the first NUL byte marks where they end.
    Writing costs a memory copy, no system call, no lock, and the pages outlive the child: a child killed
    by its deadline, a cancel or the OOM killer leaves every line it wrote before, and the parent still
    reads them. Past `max_bytes` the child writes nothing more and counts the bytes it left out in the
    header, where they survive a kill too.
  * a plain file that the child's file descriptors 1 and 2 point at, for what bypasses `sys.stdout`
    (C extensions, subprocesses). The parent frames its lines as `raw` records when it reads them.

The parent resets both before it hands the child a task (`begin`) and reads them while the task runs and
once more when it ended (`read`), before the child can take another task. The files are unlinked as soon as
the child has opened them, so nothing is left on disk when a process dies.

What it cannot do: keep more than `max_bytes` of an attempt (the first ones are kept, the rest counted);
bound the plain file on disk while one attempt runs (it is emptied before the next); tell stdout from
stderr in what bypassed `sys.stdout` / `sys.stderr`; keep a last line that has no newline yet when the
child is killed.
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
import time

from workers.engine.logs.format import frame_raw

DROPPED = struct.Struct("<Q")  # the header: bytes the cap left out; the records follow it
HEADER_BYTES = 16


def make_log_dir() -> str:
    """A private directory for the log files of one executor's children (they are unlinked once opened)."""
    return tempfile.mkdtemp(prefix="neutrino-logs-")


class ChildLog:
    """One child's two log files, as the parent holds them. Used by the thread that owns the child."""

    __slots__ = ("_dropped_raw", "_kept_raw", "_mm", "_raw_fd", "_raw_read", "_read", "buffer_path",
                 "max_bytes", "raw_path")

    def __init__(self, directory: str, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        fd, self.buffer_path = tempfile.mkstemp(prefix="buf-", dir=directory)
        try:
            os.ftruncate(fd, HEADER_BYTES + max_bytes)
            self._mm = mmap.mmap(fd, HEADER_BYTES + max_bytes)
        finally:
            os.close(fd)
        self._raw_fd, self.raw_path = tempfile.mkstemp(prefix="raw-", dir=directory)
        self._read = 0  # bytes of records already handed on, this attempt
        self._raw_read = 0  # bytes of the plain file already read, this attempt
        self._kept_raw = 0
        self._dropped_raw = 0

    def unlink(self) -> None:
        """Remove the files' names once the child has opened them (the mappings stay)."""
        for path in (self.buffer_path, self.raw_path):
            try:
                os.unlink(path)
            except OSError:
                pass

    def begin(self) -> None:
        """A new attempt: empty both files (the child is idle). Costs nothing when the last wrote nothing."""
        mm = self._mm
        end = self._end()
        if end:
            mm[HEADER_BYTES:HEADER_BYTES + end] = bytes(end)
        if DROPPED.unpack_from(mm, 0)[0]:
            DROPPED.pack_into(mm, 0, 0)
        if self._raw_read or os.fstat(self._raw_fd).st_size:
            os.ftruncate(self._raw_fd, 0)
        self._read = self._raw_read = self._kept_raw = self._dropped_raw = 0

    def _end(self, start: int = 0) -> int:
        """Where the records end: the first NUL byte (the child never writes one), or the buffer's end."""
        end = self._mm.find(b"\0", HEADER_BYTES + start)
        return self.max_bytes if end < 0 else end - HEADER_BYTES

    def read(self, *, final: bool) -> tuple[bytes, int] | None:
        """What the attempt wrote since the last read, as framed records, and the bytes the cap left out
        so far; None when nothing changed. `final`: the attempt ended (a last line without a newline is
        taken as it is)."""
        end = self._end(self._read)
        dropped = DROPPED.unpack_from(self._mm, 0)[0]
        data = b""
        if end > self._read:
            data = self._mm[HEADER_BYTES + self._read:HEADER_BYTES + end]
            self._read = end
        size = os.fstat(self._raw_fd).st_size
        if size > self._raw_read:
            data += self._read_raw(size, final=final)
        elif not data and not dropped and not self._dropped_raw:
            return None
        return data, dropped + self._dropped_raw

    def _read_raw(self, size: int, *, final: bool) -> bytes:
        room = max(0, self.max_bytes - self._read - self._kept_raw)
        want = min(size - self._raw_read, room + 1)
        chunk = os.pread(self._raw_fd, want, self._raw_read) if want else b""
        if len(chunk) > room:  # over the cap: count the rest of the file, keep whole lines up to the cap
            chunk = chunk[:room]
            cut = chunk.rfind(b"\n") + 1
            self._dropped_raw += size - self._raw_read - cut
            self._raw_read = size
            chunk = chunk[:cut]
        else:
            if not final:
                chunk = chunk[:chunk.rfind(b"\n") + 1]  # a line still being written waits for the next read
            elif chunk and not chunk.endswith(b"\n"):
                chunk += b"\n"
                self._raw_read -= 1  # the newline added here was not in the file
            self._raw_read += len(chunk)
        self._kept_raw += len(chunk)
        return frame_raw(chunk, time.time()) if chunk else b""
