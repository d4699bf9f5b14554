"""The text format of task logs, shared by the child that writes them, the parent that reads them and
whatever reads them back from storage.

A log is UTF-8 text of records, one per line::

    \\x1f<unix time, 3 decimals> <LEVEL> <stream> <text>\\n
    \\x1e<next line of the same record's text>\\n          (a record whose text spans lines: a traceback)

The streams: `stdout` and `stderr` (Python's `sys.stdout` / `sys.stderr`: INFO and ERROR), `logging` (the
`logging` module, with the record's own level), `neutrino` (`neutrino.log(...)`) and `raw` (bytes written
straight to file descriptors 1 and 2 by C code or a subprocess: INFO, time of reading). A line that is
neither is kept as `raw` text, so a damaged log still reads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

RECORD = "\x1f"
CONTINUED = "\x1e"
RECORD_B = b"\x1f"
CONTINUED_B = b"\x1e"
STREAMS = ("stdout", "stderr", "logging", "neutrino", "raw")


@dataclass(frozen=True)
class LogLine:
    ts: float  # unix time, seconds
    level: str  # DEBUG, INFO, WARNING, ERROR, CRITICAL (or a custom level's name)
    stream: str  # one of STREAMS
    text: str  # may hold newlines (a traceback logged with its message)

    def as_dict(self) -> dict[str, object]:
        return {"ts": self.ts, "level": self.level, "stream": self.stream, "text": self.text}

    def as_text(self) -> str:
        """One line of the plain-text download: `2026-01-02T03:04:05.678Z INFO stdout text`."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.ts)) + f".{int(self.ts * 1000) % 1000:03d}Z"
        return f"{stamp} {self.level} {self.stream} {self.text}"


def encode_record(ts: float, level: str, stream: str, text: str) -> bytes:
    """One record as bytes: its lines after the first become continuation lines."""
    level = level.replace(" ", "_") or "INFO"
    if "\n" in text:
        first, *rest = text.rstrip("\n").split("\n")
        body = first + "\n" + "".join(CONTINUED + line + "\n" for line in rest)
    else:
        body = text + "\n"
    return f"{RECORD}{ts:.3f} {level} {stream} {body}".encode("utf-8", "backslashreplace")


def frame_raw(data: bytes, ts: float) -> bytes:
    """Bytes read from file descriptors 1 / 2 (whole lines) as `raw` records."""
    head = RECORD_B + b"%.3f INFO raw " % ts
    return b"".join(head + line + b"\n" for line in data.split(b"\n")[:-1])


def parse(text: str) -> list[LogLine]:
    """The records of a stored log, in order. Never raises: a line that is not a record is kept as `raw`."""
    lines: list[LogLine] = []
    pending: list[str] | None = None
    head: tuple[float, str, str] = (0.0, "INFO", "raw")
    for line in text.split("\n"):
        if line.startswith(CONTINUED) and pending is not None:
            pending.append(line[1:])
            continue
        if pending is not None:
            lines.append(LogLine(head[0], head[1], head[2], "\n".join(pending)))
            pending = None
        if line.startswith(RECORD):
            parts = line[1:].split(" ", 3)
            try:
                ts = float(parts[0])
                head = (ts, parts[1], parts[2])
                pending = [parts[3] if len(parts) > 3 else ""]
                continue
            except (ValueError, IndexError):
                pass
        if line:
            lines.append(LogLine(head[0], "INFO", "raw", line))
    if pending is not None:
        lines.append(LogLine(head[0], head[1], head[2], "\n".join(pending)))
    return lines


def dropped_notice(dropped_bytes: int, ts: float) -> LogLine:
    """The line that says plainly what the cap left out: `... 3.2 MB more not kept`."""
    return LogLine(ts, "WARNING", "neutrino", f"... {human_bytes(dropped_bytes)} more not kept "
                                                f"(the log of an attempt keeps its first NEUTRINO_LOG_MAX_BYTES)")


def human_bytes(count: int) -> str:
    if count < 1000:
        return f"{count} bytes"
    if count < 1_000_000:
        return f"{count / 1000:.1f} kB"
    if count < 1_000_000_000:
        return f"{count / 1_000_000:.1f} MB"
    return f"{count / 1_000_000_000:.1f} GB"
