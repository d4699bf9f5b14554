"""What a task produced, made storable: NUL characters and lone surrogates escaped before any write.

PostgreSQL refuses a NUL character in text columns and in jsonb (`\\u0000`), and no driver can encode a
lone UTF-16 surrogate as UTF-8. A task's result, error, traceback and progress message are whatever
its code produced, and one such value used to fail the whole ledger batch it was written in. So every
writer of those columns (the ledger writer, the workers' transitions in `tasks_app.services.tasks`)
passes them through here: each such character becomes the six characters of its JSON escape
(`\\u0000`, `\\ud800`), so the row is written and a reader still sees where the character was.
Request bodies are refused instead (`tasks_app.core.payloads`): a caller can be told; a task's output
can only be recorded.

The caller of a sync task still gets the result exactly as the task returned it (the child's JSON);
only the stored copy is escaped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

NUL = "\x00"
NUL_ESCAPED = "\\u0000"
# The Task columns that hold what a task produced (or, for args, what a retry copies from a row).
TEXT_COLUMNS = frozenset({"error", "error_type", "traceback", "progress_message", "worker_id"})
JSON_COLUMNS = frozenset({"result", "args"})


def storable_text(text: str) -> str:
    """`text` with NUL and lone surrogates escaped; the same string when it has neither (the usual case)."""
    if NUL in text:
        text = text.replace(NUL, NUL_ESCAPED)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def storable_json(value: Any) -> Any:
    """A JSON value with every string and key made storable; the same object when none needed it."""
    if isinstance(value, str):
        return storable_text(value)
    if not isinstance(value, dict | list | tuple):
        return value
    try:
        # One pass in C finds the rare value that needs the walk below: the encoder writes NUL as \u0000
        # and leaves lone surrogates as they are (ensure_ascii=False), which encode() then refuses.
        text = json.dumps(value, ensure_ascii=False)
        if NUL_ESCAPED not in text and (text.isascii() or _encodes(text)):
            return value
        return _walk(value)
    except (TypeError, ValueError, RecursionError):
        return value  # not JSON, or nested past the recursion limit: the database write decides


def storable_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Task column values with those a task produced made storable (see TEXT_COLUMNS, JSON_COLUMNS)."""
    clean = dict(fields)
    for name, value in fields.items():
        if name in TEXT_COLUMNS and isinstance(value, str):
            clean[name] = storable_text(value)
        elif name in JSON_COLUMNS:
            clean[name] = storable_json(value)
    return clean


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _walk(value: Any) -> Any:
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable_text(k) if isinstance(k, str) else k: _walk(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(item) for item in value]
    return value
