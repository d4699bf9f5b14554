"""Reads of task logs: an attempt's lines, whole or from a point on (live tails)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from tasks_app.models import TaskLogChunk
from workers.engine.logs.format import LogLine, dropped_notice, parse


@dataclass(frozen=True)
class AttemptLog:
    attempt: int
    lines: list[LogLine]  # ends with the "... N MB more not kept" notice when the cap left some out
    dropped_bytes: int
    last_seq: int  # the last chunk read (0: none): a live tail asks for what comes after it


def task_log(*, task_id: uuid.UUID | str, attempt: int, after_seq: int = 0) -> AttemptLog:
    """The lines of one attempt (those of chunks after `after_seq` only, for a live tail). The cap's notice
    comes last, once the attempt's count of left-out bytes is known to be above zero."""
    rows = list(
        TaskLogChunk.objects.filter(task_id=task_id, attempt=attempt, seq__gt=after_seq)
        .order_by("seq").values_list("seq", "text", "dropped_bytes")
    )
    lines = parse("".join(text for _, text, _ in rows)) if rows else []
    dropped = max((row[2] for row in rows), default=0)
    if dropped:
        lines.append(dropped_notice(dropped, lines[-1].ts if lines else 0.0))
    return AttemptLog(attempt=attempt, lines=lines, dropped_bytes=dropped,
                      last_seq=rows[-1][0] if rows else after_seq)


def task_log_attempts(*, task_id: uuid.UUID | str) -> list[int]:
    """The attempts that have a log, in order."""
    return sorted(set(TaskLogChunk.objects.filter(task_id=task_id).values_list("attempt", flat=True)))


def render_log(log: AttemptLog, *, format: str) -> str:
    """`text`: a line a record (`2026-12-02T12:00:00.123Z INFO stdout ...`); `jsonl`: a JSON object a line."""
    if format == "text":
        return "".join(line.as_text() + "\n" for line in log.lines)
    return "".join(json.dumps(line.as_dict(), ensure_ascii=False) + "\n" for line in log.lines)
