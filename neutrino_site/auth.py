"""Who may see what: every dashboard page needs a signed-in user.

Left open here, each under its own rules: the login page itself (and any view marked
`login_not_required`, such as the health probes), the JSON API (`/api/...` and `/tasks...`, which
authenticates its callers itself), `/static/` (served before this by WhiteNoise) and `/admin/`
(Django's admin has its own login and staff check).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.http.request import split_domain_port, validate_host
from django_htmx.http import HttpResponseClientRedirect

OPEN_PREFIXES = ("/api/", "/tasks/", "/static/", "/admin/")
OPEN_PATHS = frozenset({"/api", "/tasks"})


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
