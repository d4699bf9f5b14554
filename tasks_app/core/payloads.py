"""Strict JSON for request bodies: what every database and every client can store and read back.

Python's `json` accepts things the task table cannot hold or a client cannot parse: NaN and
Infinity, numbers that overflow a float, nesting deep enough to exhaust the recursion limit, and
strings with NUL characters or lone surrogates (PostgreSQL's jsonb refuses both). Each is refused
here with a 400 that says which, instead of surfacing later as a 500.
"""

from __future__ import annotations

import json
import math
from typing import Any

from tasks_app.core.errors import BadRequest

MAX_DEPTH = 64


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} does not fit a 64-bit float")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads_strict(raw: bytes | str) -> Any:
    """Parse a request body. Raises BadRequest naming the problem."""
    try:
        value = json.loads(raw, parse_float=_parse_float, parse_constant=_reject_constant)
    except RecursionError:
        raise BadRequest(f"the body nests arrays and objects deeper than {MAX_DEPTH} levels")
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, huge integers, NaN
        raise BadRequest(f"the body is not valid JSON: {exc}")
    data = raw.encode() if isinstance(raw, str) else raw
    brackets = data.count(b"[") + data.count(b"{")
    if brackets > MAX_DEPTH or b"\\u" in data:
        check_value(value)
    return value


def check_value(value: Any) -> None:
    """Refuse nesting deeper than MAX_DEPTH and strings a database cannot store (iteratively: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > MAX_DEPTH:
                raise BadRequest(f"the body nests arrays and objects deeper than {MAX_DEPTH} levels")
            for key, child in item.items():
                _check_string(key)
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            if depth > MAX_DEPTH:
                raise BadRequest(f"the body nests arrays and objects deeper than {MAX_DEPTH} levels")
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            _check_string(item)


def _check_string(text: str) -> None:
    if "\x00" in text:
        raise BadRequest("strings in the body cannot contain NUL (\\u0000) characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("strings in the body cannot contain lone UTF-16 surrogates (\\ud800-\\udfff)")
