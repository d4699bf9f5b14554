"""Reads of the audit trail: a page of records, newest first, by actor, action, object and time.

Keyset pagination on (at, id); each filter has its own index (tasks_app.operator_models.AuditRecord).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from django.db.models import Q

from tasks_app.models import AuditRecord

PAGE_SIZE = 50
PARAMS = ("actor", "action", "object", "after", "before", "cursor")
# The actions Neutrino records, for the filter's choices (a record of another action is still found by URL).
KNOWN_ACTIONS = ("task.cancel", "task.retry", "bulk.cancel", "bulk.retry", "bulk.delete", "bulk.stop", "bulk.finish",
                 "pool.create", "pool.change", "pool.delete", "pool.enable", "pool.disable", "pool.drain",
                 "pool.undrain", "token.create", "token.revoke")


@dataclass(frozen=True)
class AuditQuery:
    actor: str = ""
    action: str = ""
    object_type: str = ""
    object_id: str = ""
    after: datetime | None = None
    before: datetime | None = None
    cursor: tuple[datetime, int] | None = None


@dataclass(frozen=True)
class AuditPage:
    items: list[AuditRecord]
    next_cursor: str | None


def audit_query_from_params(params: Mapping[str, str]) -> tuple[AuditQuery, dict[str, str], list[str]]:
    """The audit page's URL parameters parsed: the query, the valid parameters, what was dropped and why.
    `object` is `<type>` or `<type>:<id>` (task:3f2a..., pool:gpu, token:12, bulk_action:...)."""
    clean: dict[str, str] = {}
    errors: list[str] = []
    query = AuditQuery()

    def text(name: str) -> str:
        return str(params.get(name, "") or "").strip()[:200]

    if value := text("actor"):
        clean["actor"] = value
        query = replace(query, actor=value)
    if value := text("action"):
        clean["action"] = value
        query = replace(query, action=value)
    if value := text("object"):
        object_type, _, object_id = value.partition(":")
        clean["object"] = value
        query = replace(query, object_type=object_type.strip(), object_id=object_id.strip())
    for name in ("after", "before"):
        if value := text(name):
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                errors.append(f"{name}: {value!r} is not a date and time (YYYY-MM-DDTHH:MM, UTC)")
                continue
            clean[name] = value
            moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
            query = replace(query, after=moment) if name == "after" else replace(query, before=moment)
    if value := text("cursor"):
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
            at, record_id = raw.split("|", 1)
            query = replace(query, cursor=(datetime.fromisoformat(at), int(record_id)))
            clean["cursor"] = value
        except (ValueError, binascii.Error, UnicodeDecodeError):
            errors.append("the page link is invalid; showing the newest records")
    return query, clean, errors


def audit_page(*, query: AuditQuery, limit: int = PAGE_SIZE) -> AuditPage:
    """One page of records, newest first."""
    qs = AuditRecord.objects.order_by("-at", "-id")
    if query.actor:
        qs = qs.filter(actor=query.actor)
    if query.action:
        qs = qs.filter(action=query.action)
    if query.object_type:
        qs = qs.filter(object_type=query.object_type)
    if query.object_id:
        qs = qs.filter(object_id=query.object_id)
    if query.after:
        qs = qs.filter(at__gte=query.after)
    if query.before:
        qs = qs.filter(at__lt=query.before)
    if query.cursor:
        at, record_id = query.cursor
        qs = qs.filter(Q(at__lt=at) | Q(at=at, id__lt=record_id))
    items = list(qs[: limit + 1])
    next_cursor = None
    if len(items) > limit:
        last = items[limit - 1]
        next_cursor = base64.urlsafe_b64encode(f"{last.at.isoformat()}|{last.id}".encode()).decode().rstrip("=")
    return AuditPage(items=items[:limit], next_cursor=next_cursor)
