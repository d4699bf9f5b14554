"""Forwarding sync calls to the fast pool: the gateway of the seed's phase 3.

With NEUTRINO_SYNC_UPSTREAM set (in Kubernetes: `http://neutrino-fast:8000`), a gateway process does
not run sync tasks itself: it passes the call, body and credentials unchanged, to the fast pool's
Service over pooled keep-alive connections, and passes the answer back unchanged. The fast pool runs
the task and writes its row, so a forwarded call is one row, not two, and its errors (404, 422, 500,
504 ...) reach the caller as the fast pool wrote them. Queued tasks are still published by the gateway.

The caller's deadline travels on: the forwarded request carries the task's timeout (or the smaller one
the caller asked for with `X-Neutrino-Timeout-Ms`), and the gateway waits that long plus a margin for
the hop. If the fast pool cannot be reached the caller gets 503; if it does not answer in time, 504.
"""

from __future__ import annotations

import re
import threading

import httpx
from django.http import HttpRequest, HttpResponse

from neutrino.app import TaskSpec
from tasks_app.core.conf import neutrino_settings
from tasks_app.core.errors import BadRequest, BrokerUnavailable, TaskTimeout

TIMEOUT_HEADER = "X-Neutrino-Timeout-Ms"
# ASCII digits only: str.isdigit() and int() also take "١٢٣" or "²" (a latin-1 header byte), and int()
# raises on some of them; twelve digits are more milliseconds than any task may run.
_TIMEOUT_MS = re.compile(r"[0-9]{1,12}")
# Headers the fast pool needs to answer as the gateway would have; the rest stays at the gateway.
FORWARDED_HEADERS = ("content-type", "authorization", "idempotency-key", "accept")
PASSED_BACK_HEADERS = ("content-type", "retry-after")
HOP_MARGIN_S = 5.0  # queueing at the fast pool and the network, on top of the task's own timeout

_lock = threading.Lock()
_client: httpx.Client | None = None


def _http_client() -> httpx.Client:
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = httpx.Client(
                    base_url=neutrino_settings().sync_upstream.rstrip("/"),
                    limits=httpx.Limits(max_connections=256, max_keepalive_connections=64, keepalive_expiry=60),
                    http2=False,
                )
    return _client


def requested_timeout_ms(request: HttpRequest, spec: TaskSpec) -> int:
    """The task's timeout, or the smaller one the caller asked for (never a larger one).

    Raises BadRequest (400) when the header is there but is not a positive whole number of milliseconds.
    """
    raw = request.headers.get(TIMEOUT_HEADER, "").strip()
    if not raw:
        return spec.timeout_ms
    if not _TIMEOUT_MS.fullmatch(raw) or int(raw) == 0:
        raise BadRequest(f"{TIMEOUT_HEADER} must be a positive whole number of milliseconds in ASCII digits "
                         f"(at most 12), not {raw[:40]!r}", header=TIMEOUT_HEADER)
    return min(int(raw), spec.timeout_ms)


def forward_sync_call(*, request: HttpRequest, spec: TaskSpec, body: bytes) -> HttpResponse:
    timeout_ms = requested_timeout_ms(request, spec)
    headers = {name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers}
    headers[TIMEOUT_HEADER] = str(timeout_ms)
    upstream = neutrino_settings().sync_upstream
    try:
        answer = _http_client().post(
            f"/api/{spec.name}", content=body, headers=headers, timeout=timeout_ms / 1000 + HOP_MARGIN_S
        )
    except httpx.TimeoutException:
        raise TaskTimeout(
            f"the fast pool at {upstream} did not answer {spec.name} within {timeout_ms} ms (+{HOP_MARGIN_S:.0f} s)",
            task=spec.name,
            timeout_ms=timeout_ms,
        ) from None
    except httpx.TransportError as exc:
        raise BrokerUnavailable(
            f"the fast pool at {upstream} cannot be reached ({exc.__class__.__name__}: {exc}); "
            "check NEUTRINO_SYNC_UPSTREAM and that the fast pool is running",
            task=spec.name,
        ) from None
    response = HttpResponse(answer.content, status=answer.status_code)
    for name in PASSED_BACK_HEADERS:
        if name in answer.headers:
            response[name] = answer.headers[name]
    return response


def close() -> None:
    global _client
    with _lock:
        client, _client = _client, None
    if client is not None:
        client.close()
