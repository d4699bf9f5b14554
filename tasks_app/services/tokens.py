"""API tokens: create one (its secret is shown once), revoke, list, and check a presented bearer token.

A token looks like `ntr_<43 url-safe characters>` (256 random bits). Only its SHA-256 is stored, so a
leaked database does not leak usable tokens; a plain hash (not a slow password hash) is enough for a
secret this long, and it keeps the check to one indexed lookup per request. `prefix` (the first 12
characters) tells tokens apart in lists without revealing them.

A token has a scope: an admin token sees, cancels and retries every task; any other only the tasks it
created. `allowed_tasks` (empty: all) limits which tasks it may call. Both are set when it is created
and never change: to change them, create another token and revoke this one.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from tasks_app.core.errors import BadRequest, Conflict, Forbidden, TokenNotFound, Unauthorized
from tasks_app.models import ApiToken
from tasks_app.services.audit import Actor, audit_record_if

TOKEN_PREFIX = "ntr_"
SECRET_BYTES = 32
DISPLAY_CHARS = 12
# last_used_at is written at most this often per token, so a busy token costs no write per request.
LAST_USED_EVERY = timedelta(minutes=1)
NAME_MAX = 100
TASK_NAME_MAX = 200  # Task.function_name


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def token_create(*, name: str, user: Any = None, admin: bool = False,
                 allowed_tasks: Sequence[str] = (), actor: Actor | None = None) -> tuple[ApiToken, str]:
    """A new token named `name`. Returns the row and the plaintext token (shown once, never stored).

    `admin`: it sees every task, not only its own. `allowed_tasks`: the only tasks it may call (empty:
    all); names are not checked against the registry, which may differ between processes. With an
    `actor`, the audit trail records it (never the secret).
    Raises BadRequest for an empty or over-long name or task name, and Conflict when a live token has that name.
    """
    name = name.strip()
    if not name or len(name) > NAME_MAX or not name.isprintable():
        raise BadRequest(f"a token name is 1 to {NAME_MAX} printable characters, not {name!r}")
    tasks = sorted({task.strip() for task in allowed_tasks if task.strip()})
    for task in tasks:
        if len(task) > TASK_NAME_MAX or not task.isprintable():
            raise BadRequest(f"a task name is 1 to {TASK_NAME_MAX} printable characters, not {task!r}")
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(SECRET_BYTES)
    try:
        with transaction.atomic():
            token = ApiToken.objects.create(
                name=name,
                prefix=plaintext[:DISPLAY_CHARS],
                secret_hash=hash_secret(plaintext),
                user=user,
                admin=admin,
                allowed_tasks=tasks,
                created_at=timezone.now(),
            )
            audit_record_if(actor, action="token.create", object_type="token", object_id=token.id,
                            after=token_shown(token))
    except IntegrityError:
        raise Conflict(f"a live token named {name!r} exists already; revoke it first or pick another name",
                       name=name)
    return token, plaintext


def token_check_task(*, who: str, allowed_tasks: Sequence[str], task_name: str) -> None:
    """Raise Forbidden (403) when a token limited to `allowed_tasks` (empty: all) calls another task.
    `who` names the caller in the message (`token:<name>`)."""
    if allowed_tasks and task_name not in allowed_tasks:
        raise Forbidden(
            f"{who} may not call {task_name!r}: it may call only {', '.join(allowed_tasks)} "
            "(an admin creates a token for other tasks with `neutrino token create NAME --tasks a,b`)",
            task=task_name,
        )


def token_shown(token: ApiToken) -> dict[str, Any]:
    """What the audit trail keeps of a token: never its secret nor its hash."""
    return {"name": token.name, "prefix": token.prefix, "admin": token.admin, "allowed_tasks": token.allowed_tasks,
            "revoked_at": token.revoked_at}


def token_revoke(*, name_or_prefix: str, actor: Actor | None = None) -> ApiToken:
    """Revoke the live token with this name or prefix; calls with it get 401 from then on.

    Raises TokenNotFound, or Conflict when the prefix matches several tokens.
    """
    needle = name_or_prefix.strip()
    matches = list(ApiToken.objects.filter(Q(name=needle) | Q(prefix=needle), revoked_at__isnull=True)[:2])
    if not matches:
        raise TokenNotFound(f"no live token is named {needle!r} or starts with it (`neutrino token list` shows them)",
                            name=needle)
    if len(matches) > 1:
        raise Conflict(f"{needle!r} matches several tokens; name one by its name", name=needle)
    token_revoke_one(token=matches[0], actor=actor)
    return matches[0]


def token_revoke_one(*, token: ApiToken, actor: Actor | None = None) -> bool:
    """Revoke this token (conditional: a token revoked already stays as it was). True when it was live."""
    before = token_shown(token)
    revoked_at = timezone.now()
    with transaction.atomic():
        if not ApiToken.objects.filter(id=token.id, revoked_at__isnull=True).update(revoked_at=revoked_at):
            return False
        token.revoked_at = revoked_at
        audit_record_if(actor, action="token.revoke", object_type="token", object_id=token.id, before=before,
                        after=token_shown(token))
    return True


def token_list(*, include_revoked: bool = False) -> list[ApiToken]:
    rows = ApiToken.objects.select_related("user").order_by("-created_at")
    if not include_revoked:
        rows = rows.filter(revoked_at__isnull=True)
    return list(rows)


def token_authenticate(*, secret: str) -> ApiToken:
    """The live token whose secret this is, with its last use recorded (at most once a minute).

    Raises Unauthorized naming what is wrong: unknown or revoked.
    """
    token = ApiToken.objects.filter(secret_hash=hash_secret(secret)).first()
    if token is None:
        raise Unauthorized(
            "the bearer token is not valid: check it was copied whole, or create one with `neutrino token create NAME`"
        )
    if token.revoked_at is not None:
        raise Unauthorized(
            f"the bearer token {token.prefix}… ({token.name!r}) was revoked at {token.revoked_at:%Y-%m-%d %H:%M:%S} "
            "UTC; create a new one with `neutrino token create NAME`"
        )
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_EVERY:
        # Conditional, so concurrent requests write it once.
        ApiToken.objects.filter(id=token.id).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_EVERY)
        ).update(last_used_at=now)
        token.last_used_at = now
    return token
