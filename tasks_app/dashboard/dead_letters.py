"""The dashboard's dead letters: queued tasks that ended for good, grouped by cause
(tasks_app.selectors.dead_letters), each group a link to its tasks and retriable as a whole."""

from __future__ import annotations

from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from tasks_app.selectors.dead_letters import (
    DEAD_RANGES,
    DEFAULT_RANGE,
    MAX_GROUPS,
    DeadLetterGroup,
    dead_letter_groups,
)


@require_GET
def dead_letters_view(request: HttpRequest) -> HttpResponse:
    range_key = request.GET.get("range", DEFAULT_RANGE)
    if range_key not in DEAD_RANGES:
        range_key = DEFAULT_RANGE
    now = timezone.now()
    groups = dead_letter_groups(now=now, range_key=range_key)
    # The task list's filter of each group (its bulk retry acts on exactly these tasks): a group without
    # an error type has no list filter of its own, so it offers the list but no retry of the whole group.
    after = (now - DEAD_RANGES[range_key][1]).strftime("%Y-%m-%dT%H:%M")  # the groups' own start (UTC)
    rows = [(group, _list_params(group, after), bool(group.error_type)) for group in groups]
    return render(request, "tasks_app/dead_letters.html", {
        "rows": rows,
        "groups": groups,
        "total": sum(group.count for group in groups),
        "range_key": range_key,
        "ranges": [(key, label) for key, (label, _) in DEAD_RANGES.items()],
        "max_groups": MAX_GROUPS,
    })


def _list_params(group: DeadLetterGroup, after: str) -> str:
    params = {"status": group.status, "function": group.function_name, "after": after}
    if group.error_type:
        params["error_type"] = group.error_type
    return urlencode(params)
