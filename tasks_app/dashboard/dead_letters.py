"""The dashboard's dead letters: queued tasks that ended for good, grouped by cause
(tasks_app.selectors.dead_letters), each group a link to its tasks and retriable as a whole."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from tasks_app.selectors.dead_letters import DEAD_RANGES, DEFAULT_RANGE, MAX_GROUPS, dead_letter_groups


@require_GET
def dead_letters_view(request: HttpRequest) -> HttpResponse:
    range_key = request.GET.get("range", DEFAULT_RANGE)
    if range_key not in DEAD_RANGES:
        range_key = DEFAULT_RANGE
    groups = dead_letter_groups(now=timezone.now(), range_key=range_key)
    return render(request, "tasks_app/dead_letters.html", {
        "groups": groups,
        "total": sum(group.count for group in groups),
        "range_key": range_key,
        "ranges": [(key, label) for key, (label, _) in DEAD_RANGES.items()],
        "max_groups": MAX_GROUPS,
    })
