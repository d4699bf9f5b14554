"""HTTP on the wire, for both clients: how a `Request` becomes httpx arguments, how an answer becomes a
`Reply` or the exception it calls for, and what a broken connection turns into."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

try:  # a runtime dependency; without it the client sends no trace context
    from opentelemetry.propagate import inject as _inject_trace_context
except ImportError:  # pragma: no cover
    _inject_trace_context = None  # type: ignore[assignment]

from neutrino.client.errors import (
    Conflict,
    GatewayUnavailable,
    NeutrinoClientError,
    Overloaded,
    TaskCancelled,
    TaskFailed,
    TaskNotFound,
    TaskTimeout,
    Unauthorized,
    ValidationError,
)
from neutrino.client.flows import Reply, Request

USER_AGENT = "neutrino-client/0.1.0"


# --- sending ---------------------------------------------------------------------------------------


def default_headers(token: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    headers.update(extra or {})
    return headers


def http_kwargs(request: Request, default_timeout: float) -> tuple[float, dict[str, Any]]:
    """The request's timeout in seconds, and the keyword arguments of `httpx.Client.request` that send it."""
    timeout_s = request.timeout_s if request.timeout_s is not None else default_timeout
    headers = {"Idempotency-Key": request.key} if request.key else {}
    if _inject_trace_context is not None:
        # The caller's current span, if its OpenTelemetry SDK has one, becomes the parent of the server's
        # trace (W3C traceparent, or what OTEL_PROPAGATORS chose); nothing is added otherwise.
        _inject_trace_context(headers)
    kwargs: dict[str, Any] = {"params": request.params, "headers": headers, "timeout": timeout_s}
    if request.body is not None:
        kwargs["content"] = json.dumps(request.body, separators=(",", ":"))
        headers["Content-Type"] = "application/json"
    return timeout_s, kwargs


# --- a broken connection ---------------------------------------------------------------------------


def backoff_s(attempt: int) -> float:
    return float(min(2.0, 0.2 * 2 ** (attempt - 1)))


def may_resend(request: Request, exc: httpx.TransportError) -> bool:
    """Nothing reached the server (connect failed), or the request is safe to repeat."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return True
    return request.resend_ok and isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError)


def transport_error(request: Request, exc: httpx.TransportError, base_url: str,
                    timeout_s: float) -> NeutrinoClientError:
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return request.timeout_error(
            f"{request.call}: no answer from {base_url} within {timeout_s:g} s (the client's timeout); "
            "the server may still be working on it", call=request.call)
    return GatewayUnavailable(f"{request.call}: cannot reach {base_url}: {exc!r}", call=request.call)


# --- the answer ------------------------------------------------------------------------------------


WAIT_HEADER = "X-Neutrino-Wait"


def pause_after_s(response: httpx.Response) -> float:
    """How long to wait before asking again: a long-poll the server did not grant comes back at once with
    `X-Neutrino-Wait: not-granted` and `Retry-After`, and asking again at once would spin."""
    if response.headers.get(WAIT_HEADER) != "not-granted":
        return 0.0
    return min(_retry_after(response, {}), 5.0)


def to_reply(request: Request, response: httpx.Response) -> Reply:
    """The server's answer to `request` as a `Reply`; raises the exception an error answer calls for."""
    if request.text_answer and response.status_code < 400:
        return Reply(response.status_code, {"text": response.text,
                                            "headers": {k.lower(): v for k, v in response.headers.items()}})
    body = _parse_body(response)
    if response.status_code >= 400:
        raise _error_for(request, response, body)
    if not isinstance(body, dict):
        raise NeutrinoClientError(f"{request.call}: {response.status_code} answer is not a JSON object: "
                                  f"{response.text[:200]!r}", call=request.call, status_code=response.status_code)
    return Reply(response.status_code, body)


def _parse_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_for(request: Request, response: httpx.Response, body: Any) -> NeutrinoClientError:
    """The exception for an error answer, with the server's message in it."""
    status = response.status_code
    data = body if isinstance(body, dict) else {}
    said = str(data.get("message") or data.get("detail") or response.text[:300].strip() or response.reason_phrase)
    task_id = data.get("task_id")
    where = f" (task {task_id})" if task_id else ""
    message = f"{request.call}: {status} {said}{where}"
    common: dict[str, Any] = {"call": request.call, "status_code": status, "body": body,
                              "task_id": str(task_id) if task_id else None}
    if status in (401, 403):
        return Unauthorized(message, **common)
    if status == 404:
        return TaskNotFound(message, **common)
    if status == 409:
        if data.get("error_type") == "Cancelled":
            return TaskCancelled(message, **common)
        return Conflict(message, **common)
    if status in (400, 413, 422):
        return ValidationError(message, fields=data.get("fields"), **common)
    if status == 429:
        return Overloaded(message, retry_after=_retry_after(response, data), **common)
    if status == 500 and task_id:
        return TaskFailed(message, error_type=data.get("error_type"), traceback=data.get("traceback"), **common)
    if status == 504 and data.get("error") == "task_timeout":
        return TaskTimeout(message, **common)
    if status in (502, 503, 504):
        return GatewayUnavailable(message, **common)
    return NeutrinoClientError(message, **common)


def _retry_after(response: httpx.Response, data: Mapping[str, Any]) -> float:
    for value in (response.headers.get("Retry-After"), data.get("retry_after_s")):
        try:
            if value is not None:
                return max(0.0, float(value))
        except (TypeError, ValueError):
            continue
    return 1.0
