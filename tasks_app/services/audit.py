"""The audit trail: one append-only record per human action (a cancel, a retry, a bulk action, a pool
change, a token made or revoked, a schedule changed), written by the service that does the action.

Callers say who acts as an `Actor`: `actor_of_request` for a dashboard, admin or API request,
`cli_actor()` for the `neutrino` command. A service that takes `actor=None` records nothing (the
system's own transitions, tests of the transition alone).

From where: the request's address is REMOTE_ADDR, or the last entry of the header NEUTRINO_CLIENT_IP_HEADER
names when a proxy in front sets one (as the sign-in throttle reads it). Behind a proxy without it, every
record shows the proxy's address.
"""

from __future__ import annotations

import getpass
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.forms.models import model_to_dict
from django.http import HttpRequest
from django.utils import timezone

from tasks_app.core.storable import storable_json
from tasks_app.models import AuditRecord

USER_AGENT_MAX = 300
SYSTEM = "system"  # the actor of what the system records about a human action (a bulk action's end)


@dataclass(frozen=True)
class Actor:
    """Who acts and from where. `label`: "user:<username>", "token:<name>", "anonymous", "cli:<os user>"."""

    label: str
    ip: str | None = None
    user_agent: str = ""


def client_address(request: HttpRequest) -> str | None:
    """The address the request came from (see the module's docstring); None when it is no IP address."""
    header = str(getattr(settings, "NEUTRINO_CLIENT_IP_HEADER", "") or "")
    address = ""
    if header:
        address = request.headers.get(header, "").split(",")[-1].strip()
    address = address or str(request.META.get("REMOTE_ADDR") or "")
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def actor_of_request(request: HttpRequest, *, label: str | None = None) -> Actor:
    """The person or token behind a request. `label` names an API caller (its creator label); without
    it the signed-in user is named (dashboard and admin)."""
    if label is None:
        user = getattr(request, "user", None)
        label = f"user:{user.get_username()}" if user is not None and user.is_authenticated else "anonymous"
    return Actor(label=label, ip=client_address(request),
                 user_agent=str(request.META.get("HTTP_USER_AGENT", ""))[:USER_AGENT_MAX])


def cli_actor() -> Actor:
    """The operator at a shell on the server (`neutrino token create`, ...)."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's)
        who = "unknown"
    return Actor(label=f"cli:{who}", user_agent="neutrino CLI")


def audit_record(*, actor: Actor, action: str, object_type: str, object_id: Any = "",
                 before: Mapping[str, Any] | None = None, after: Mapping[str, Any] | None = None) -> AuditRecord:
    """Append one record: `actor` did `action` ("<object type>.<verb>") to the object, which was `before`
    and is `after` (JSON-able mappings; dates and UUIDs become strings). Returns the stored record."""
    return AuditRecord.objects.create(
        at=timezone.now(), actor=actor.label[:150], ip=actor.ip, user_agent=actor.user_agent[:USER_AGENT_MAX],
        action=action[:64], object_type=object_type[:32], object_id=str(object_id)[:200],
        before=_json(before), after=_json(after),
    )


def audit_record_if(actor: Actor | None, **fields: Any) -> AuditRecord | None:
    """`audit_record` when there is an actor (a service called on a person's behalf); else nothing."""
    return audit_record(actor=actor, **fields) if actor is not None else None


def snapshot(instance: Any, *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """A model instance's fields as JSON-able values, for `before` / `after`."""
    return {key: value for key, value in _json(model_to_dict(instance)).items() if key not in exclude}


def _json(value: Mapping[str, Any] | None) -> Any:
    if value is None:
        return None
    return storable_json(json.loads(json.dumps(dict(value), cls=DjangoJSONEncoder)))
