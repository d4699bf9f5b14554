"""The dashboard's Audit page: every human action, newest first, by actor, action, object and time.

Needs the permission view_auditrecord (nobody has one to change or delete a record). Thin: the selector reads.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from tasks_app.dashboard.views import require_permission, wants_partial
from tasks_app.selectors.audit import KNOWN_ACTIONS, audit_page, audit_query_from_params


@require_GET
def audit_view(request: HttpRequest) -> HttpResponse:
    require_permission(request, "tasks_app.view_auditrecord", to="read the audit trail")
    query, params, errors = audit_query_from_params(request.GET)
    page = audit_page(query=query)
    base = reverse("audit")
    filters = {k: v for k, v in params.items() if k != "cursor"}
    context = {
        "page": page,
        "params": params,
        "errors": errors,
        "actions": sorted({*KNOWN_ACTIONS, *([params["action"]] if "action" in params else [])}),
        "older_href": f"{base}?{urlencode({**filters, 'cursor': page.next_cursor})}" if page.next_cursor else None,
        "newest_href": f"{base}?{urlencode(filters)}" if "cursor" in params else None,
    }
    template = "tasks_app/_audit.html" if wants_partial(request, "audit") else "tasks_app/audit.html"
    response = render(request, template, context)
    response["Vary"] = "HX-Request, HX-Target"
    return response
