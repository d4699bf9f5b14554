"""Who may see what: every dashboard page needs a signed-in user, and sign-in is throttled.

Left open here, each under its own rules: the login page itself (and any view marked
`login_not_required`, such as the health probes), the JSON API (`/api/...` and `/tasks...`, which
authenticates its callers itself), `/static/` (served before this by WhiteNoise) and `/admin/`
(Django's admin has its own login and staff check).

Sign-in (the login page and the admin's) is throttled by django-axes, whose counts live in the
database, so every server process sees the same ones: after NEUTRINO_LOGIN_FAILURE_LIMIT failures for
one username, or from one address, within NEUTRINO_LOGIN_LOCKOUT_S, that username or address is
refused (429, the login page saying why) until the failures are that old. A successful sign-in
forgets that user's failures from that address.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from axes.backends import AxesStandaloneBackend
from axes.handlers.proxy import AxesProxyHandler
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.http.request import split_domain_port, validate_host
from django.shortcuts import render
from django_htmx.http import HttpResponseClientRedirect

OPEN_PREFIXES = ("/api/", "/tasks/", "/schedules/", "/groups/", "/chains/", "/static/", "/admin/")
OPEN_PATHS = frozenset({"/api", "/tasks", "/schedules", "/chains"})


def is_open_path(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class DashboardLoginRequired(LoginRequiredMiddleware):
    """Django's LoginRequiredMiddleware (login page and `login_not_required` views stay open),
    minus the open prefixes above. An htmx request whose session expired is sent to the login
    page as a whole page, not swapped into a fragment."""

    def process_view(
        self, request: HttpRequest, view_func: Callable[..., Any], view_args: Any, view_kwargs: Any
    ) -> HttpResponseBase | None:
        if is_open_path(request.path_info):
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)

    # The stub promises an HttpResponseRedirect; Django only returns this from process_view, and htmx needs a 200.
    def handle_no_permission(  # type: ignore[override]
        self, request: HttpRequest, view_func: Callable[..., Any]
    ) -> HttpResponse:
        response = super().handle_no_permission(request, view_func)
        if getattr(request, "htmx", False):
            return HttpResponseClientRedirect(response["Location"])
        return response


class SameHostOriginValidator:
    """Refuse a websocket whose page came from another host (cross-site websocket hijacking).

    The dashboard's socket listens on its own port, so the Origin (the page: host and HTTP port)
    and the socket's Host differ in port; the host names must match, or the Origin's host must be
    one of ALLOWED_HOSTS (a wildcard `*` allows none this way). Clients that send no Origin (not
    browsers) pass on to the login check.
    """

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers", []))
        origin = headers.get(b"origin")
        host = headers.get(b"host", b"").decode("latin-1")
        if origin is not None and not self.allowed(origin.decode("latin-1"), host):
            await WebsocketDenier()(scope, receive, send)
            return
        await self.application(scope, receive, send)

    @staticmethod
    def allowed(origin: str, host: str) -> bool:
        origin_host = (urlsplit(origin).hostname or "").lower()
        if not origin_host:
            return False
        socket_host, _ = split_domain_port(host)
        if origin_host == socket_host.strip("[]"):
            return True
        patterns = [h for h in settings.ALLOWED_HOSTS if h != "*"]
        return validate_host(origin_host, patterns)


# --- sign-in throttle (django-axes) -----------------------------------------------------------------


def login_client_address(request: HttpRequest) -> str:
    """The address a sign-in came from (AXES_CLIENT_IP_CALLABLE).

    REMOTE_ADDR, unless NEUTRINO_CLIENT_IP_HEADER names a header that the proxy in front sets (such as
    X-Forwarded-For): then its last entry, the address that proxy saw. Behind a proxy without it, every
    sign-in comes from the proxy's address and the per-address limit counts everyone's failures together.
    """
    header = settings.NEUTRINO_CLIENT_IP_HEADER
    if header:
        forwarded = request.headers.get(header, "").split(",")[-1].strip()
        if forwarded:
            return forwarded
    return str(request.META.get("REMOTE_ADDR") or "unknown")


class LoginThrottleBackend(AxesStandaloneBackend):
    """Axes' check, first in AUTHENTICATION_BACKENDS: refuses a locked-out username or address.

    A check without a request (`authenticate()` in a management shell or a script on the server) is
    not a sign-in over the network: it is passed on to the next backend, where Axes would raise.
    """

    def authenticate(self, request: HttpRequest | None, username: str | None = None,
                     password: str | None = None, **kwargs: Any) -> None:
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)


class ThrottledLoginView(LoginView):
    """Django's login view; a successful sign-in forgets this user's failures from this address."""

    redirect_authenticated_user = True

    def form_valid(self, form: AuthenticationForm) -> HttpResponse:
        response = super().form_valid(form)
        AxesProxyHandler.reset_attempts(ip_address=login_client_address(self.request),
                                        username=form.get_user().get_username())
        return response


def login_locked_response(request: HttpRequest, original_response: HttpResponse | None = None,
                          credentials: dict[str, Any] | None = None) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: the login page again, saying why and for how long, as a 429."""
    lockout_s = int(settings.AXES_COOLOFF_TIME.total_seconds())
    minutes = max(1, round(lockout_s / 60))
    context = {"form": AuthenticationForm(request), "locked_out": True,
               "locked_for": f"{minutes} minute{'s' if minutes != 1 else ''}",
               "failure_limit": settings.AXES_FAILURE_LIMIT, "next": request.POST.get("next", "")}
    response = render(request, "registration/login.html", context, status=429)
    response["Retry-After"] = str(lockout_s)
    return response
