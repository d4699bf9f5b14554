"""Who is calling the API, and how often: bearer tokens, anonymous calls, the per-caller rate limit.

`ApiAuth` is the django-ninja auth of the gateway and polling routers. It first refuses what a browser
must not send (tasks_app.api.browsers: another site's page, a body that is not JSON). Each request either shows a live
token (`Authorization: Bearer ntr_...`) or, where NEUTRINO_ALLOW_ANONYMOUS is on and it comes from a
loopback address (REMOTE_ADDR: this machine), nothing; anything else is 401 with a message saying what
to send. The address is the connection's, whatever address the server listens on: `neutrino dev
--host 0.0.0.0` still wants a token from other machines. What this cannot tell apart: a proxy or tunnel
on this machine (nginx, `ssh -L`) forwards everyone's calls from a loopback address. The caller then
spends one unit of its token bucket (NEUTRINO_RATE_LIMIT_PER_S; 0: no limit) or gets 429 with Retry-After.

What the rate limit cannot do: the buckets live in each server process's memory, so with N gunicorn
workers a caller gets up to N times the rate, and a restart refills them. It keeps one caller from
flooding a process, not an exact quota (put a shared limiter in a proxy in front for that).
Anonymous callers are told apart by their address (REMOTE_ADDR), which behind a proxy is the proxy's.

Who may do what (`Caller`): a task records who created it. A token that is not an admin sees, lists,
cancels and retries only the tasks it created, and calls only its `allowed_tasks` (when it has any;
403 otherwise); an admin token sees every task. Anonymous callers are one owner together: they see the
tasks anonymous callers created, and no token's.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest
from ninja.security import HttpBearer

from tasks_app.api.browsers import browser_guard
from tasks_app.core.conf import neutrino_settings
from tasks_app.core.errors import Overloaded, Unauthorized
from tasks_app.models import ANONYMOUS, TaskCreator
from tasks_app.services.tokens import token_authenticate, token_check_task

# Buckets idle for longer than a full refill are forgotten once there are this many.
MAX_BUCKETS = 10_000


@dataclass(frozen=True)
class Caller:
    """`request.auth` of an API request: a token (with its scope), or an anonymous address."""

    token_id: int | None
    token_name: str | None
    address: str
    admin: bool = False
    allowed_tasks: tuple[str, ...] = ()  # empty: every task

    @property
    def rate_key(self) -> str:
        return f"token:{self.token_id}" if self.token_id is not None else f"ip:{self.address}"

    @property
    def scope(self) -> str:
        """Idempotency keys are scoped to the caller: one token cannot replay another's submit."""
        return f"t{self.token_id}" if self.token_id is not None else "anon"

    @property
    def creator(self) -> TaskCreator:
        """What the tasks this caller creates record."""
        if self.token_id is None:
            return TaskCreator(label=ANONYMOUS)
        return TaskCreator(label=f"token:{self.token_name}", token_id=self.token_id)

    @property
    def owner(self) -> TaskCreator | None:
        """Whose tasks this caller may read, cancel and retry: its own, or (None) everyone's for an admin."""
        return None if self.admin else self.creator

    def check_may_call(self, task_name: str) -> None:
        """Raise Forbidden (403) when this token is limited to other tasks."""
        token_check_task(who=self.creator.label, allowed_tasks=self.allowed_tasks, task_name=task_name)


class RateLimiter:
    """Token buckets: `rate_per_s` refill, `burst` capacity, one bucket per key."""

    def __init__(self, *, rate_per_s: float, burst: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = float(burst or max(1, math.ceil(rate_per_s)))
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def wait_s(self, key: str) -> float:
        """Take one unit for `key`: 0.0 when allowed, else the seconds until one is available."""
        now = time.monotonic()
        with self._lock:
            level, stamp = self._buckets.get(key, (self.burst, now))
            level = min(self.burst, level + (now - stamp) * self.rate_per_s)
            if level >= 1.0:
                self._buckets[key] = (level - 1.0, now)
                if len(self._buckets) > MAX_BUCKETS:
                    self._forget_idle(now)
                return 0.0
            self._buckets[key] = (level, now)
            return (1.0 - level) / self.rate_per_s

    def _forget_idle(self, now: float) -> None:
        full_after_s = self.burst / self.rate_per_s
        for key, (_, stamp) in list(self._buckets.items()):
            if now - stamp > full_after_s:
                del self._buckets[key]


@functools.cache
def _limiter(rate_per_s: float, burst: int) -> RateLimiter:
    return RateLimiter(rate_per_s=rate_per_s, burst=burst)


@receiver(setting_changed)
def _new_buckets_on_change(*, setting: str, **kwargs: object) -> None:
    """A changed rate or burst starts from full buckets (and lets the old limiter go)."""
    if setting.startswith("NEUTRINO_RATE_LIMIT"):
        _limiter.cache_clear()


def is_loopback(address: str) -> bool:
    """Whether REMOTE_ADDR is this machine's loopback (127.0.0.0/8, ::1, or ::ffff:127.x.y.z)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # "unknown", a Unix socket's empty peer
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def rate_limit(caller: Caller) -> None:
    """Spend one request of `caller`'s budget. Raises Overloaded (429, Retry-After) when it is spent."""
    conf = neutrino_settings()
    if conf.rate_limit_per_s <= 0:
        return
    wait_s = _limiter(conf.rate_limit_per_s, conf.rate_limit_burst).wait_s(caller.rate_key)
    if wait_s > 0:
        retry_after_s = max(1, math.ceil(wait_s))
        who = f"token {caller.token_name!r}" if caller.token_name else f"anonymous caller {caller.address}"
        raise Overloaded(
            f"rate limit: {who} may make {conf.rate_limit_per_s:g} requests per second "
            f"(NEUTRINO_RATE_LIMIT_PER_S); retry in {retry_after_s} s",
            retry_after_s=retry_after_s,
            reason="rate_limit",
        )


class ApiAuth(HttpBearer):
    """The browser guard, bearer tokens, anonymous calls where allowed, then the rate limit.

    Never returns None: it raises. The guard (tasks_app.api.browsers) runs first, so that a request a
    page of another site sent learns nothing else, and a form post never reaches a task.
    """

    def __call__(self, request: HttpRequest) -> Caller:
        browser_guard(request)
        address = str(request.META.get("REMOTE_ADDR") or "unknown")
        header = request.headers.get("Authorization", "").strip()
        if not header:
            if not neutrino_settings().allow_anonymous:
                raise Unauthorized(
                    "this API needs a token: send 'Authorization: Bearer <token>' "
                    "(an admin creates one with `neutrino token create NAME` or in the Django admin)"
                )
            if not is_loopback(address):
                raise Unauthorized(
                    f"anonymous calls are allowed from this machine only, not from {address}: send "
                    "'Authorization: Bearer <token>' (an admin creates one with `neutrino token create NAME`)"
                )
            caller = Caller(token_id=None, token_name=None, address=address)
        else:
            scheme, _, secret = header.partition(" ")
            secret = secret.strip()
            if scheme.lower() != "bearer" or not secret:
                # The header is never echoed: it may hold a secret sent the wrong way.
                raise Unauthorized("the Authorization header must be 'Bearer <token>' (the word Bearer, a space, "
                                   "then the token)")
            token = token_authenticate(secret=secret)
            caller = Caller(token_id=token.id, token_name=token.name, address=address, admin=token.admin,
                            allowed_tasks=tuple(token.allowed_tasks or ()))
        rate_limit(caller)
        return caller

    def authenticate(self, request: HttpRequest, token: str) -> Any:  # pragma: no cover - __call__ does it all
        return None


api_auth = ApiAuth()


def request_caller(request: HttpRequest) -> Caller:
    """The caller ApiAuth recorded on the request."""
    caller = getattr(request, "auth", None)
    if isinstance(caller, Caller):
        return caller
    return Caller(token_id=None, token_name=None, address=str(request.META.get("REMOTE_ADDR") or "unknown"))
