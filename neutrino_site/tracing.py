"""The HTTP server's traces: one server span per request, continuing the caller's `traceparent`.

Sets tracing up for the process (workers.engine.tracing) when the middleware is loaded; with tracing off the
middleware removes itself (MiddlewareNotUsed), so a request pays nothing for it.
"""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest, HttpResponse

from tasks_app.core.conf import neutrino_settings
from workers.engine import tracing


class TracingMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        conf = neutrino_settings()
        if not tracing.setup(enabled=conf.tracing, service_name="neutrino-http", exporter=conf.trace_exporter):
            raise MiddlewareNotUsed
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        method = request.method or "GET"
        attributes = {"http.request.method": method, "url.path": request.path}
        with tracing.server_span(f"HTTP {method}", request.headers, attributes=attributes) as span:
            response = self.get_response(request)
            match = request.resolver_match
            if span is not None:
                if match is not None and match.route:
                    span.update_name(f"HTTP {method} /{match.route}")
                    span.set_attribute("http.route", f"/{match.route}")
                span.set_attribute("http.response.status_code", response.status_code)
            return response
