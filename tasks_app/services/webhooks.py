"""Writes: webhook deliveries (alerts and task callbacks) queued as rows, and the scheduler's sending of them.

A webhook is never sent from the code that decides on it (a gateway's request, a worker's finish, an
alert's evaluation): that code writes a `WebhookDelivery` row, and the scheduler's `webhooks` job sends
due rows, so nobody waits on a remote server and a restart loses nothing. Each attempt is claimed with a
conditional UPDATE that moves `next_attempt_at` a lease ahead and counts the attempt: two schedulers
never send one attempt twice, and a scheduler killed mid-send leaves its attempt to be made again once
the lease ends (receivers see at-least-once delivery; `Neutrino-Delivery` tells repeats apart).
A failed attempt is tried again after NEUTRINO_WEBHOOK_BACKOFF_S, doubling each time (at most an hour),
up to NEUTRINO_WEBHOOK_MAX_ATTEMPTS; then the row is `failed`.

Task callbacks (`callbacks_collect`): a task submitted with a `callback_url` keeps it on its row until it
finishes; the job finds such rows through a partial index that holds only them, and hands each to a
delivery row in one transaction (its `callback_url` set back to NULL by a conditional UPDATE), so the
transitions that finish a task do no extra work, with or without a callback.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from tasks_app.adapters.webhook_sender import Outgoing, SendOutcome, WebhookSender
from tasks_app.alert_models import AlertRule, DeliveryEvent, DeliveryStatus, WebhookDelivery, WebhookTarget
from tasks_app.core.conf import neutrino_settings
from tasks_app.core.errors import InvalidArguments
from tasks_app.core.webhook_policy import AllowList, Resolver, UrlRefused, system_resolver, webhook_destination
from tasks_app.models import FINISHED_STATUSES, Task

logger = logging.getLogger("neutrino.webhooks")

SEND_BATCH = 50
COLLECT_BATCH = 200
# An attempt's claim: past this, a scheduler that died mid-send has its attempt made again.
LEASE_S = 120.0
BACKOFF_MAX_S = 3600.0
TASK_FIELDS = ("id", "callback_url", "function_name", "status", "pool", "attempt", "result", "error", "error_type",
               "created_at", "started_at", "completed_at", "duration_ms")


def payload_text(payload: dict[str, Any]) -> str:
    """The body as sent: compact JSON, its keys sorted, so what is stored is what is signed."""
    return json.dumps(payload, cls=DjangoJSONEncoder, separators=(",", ":"), sort_keys=True)


def webhook_enqueue(*, url: str, event: str, payload: dict[str, Any], now: datetime,
                    target: WebhookTarget | None = None, rule: AlertRule | None = None,
                    task_id: uuid.UUID | None = None) -> WebhookDelivery:
    """Queue one webhook, due at once. The caller's transaction holds it with the change it reports."""
    return WebhookDelivery.objects.create(
        url=url, event=event, payload=payload_text(payload), target=target, rule=rule, task_id=task_id,
        max_attempts=neutrino_settings().webhook_max_attempts, next_attempt_at=now, created_at=now,
    )


def retry_delay_s(attempts: int) -> float:
    """The wait after the `attempts`-th failed attempt: the base delay, doubled after each failure."""
    return float(min(BACKOFF_MAX_S, neutrino_settings().webhook_backoff_s * 2 ** max(0, attempts - 1)))


def webhook_url_check(*, url: object, field: str, resolve: Resolver = system_resolver) -> str:
    """`url`, if the allow-list lets Neutrino call it; InvalidArguments (422) naming `field` otherwise.

    Checked again before every attempt: what a name resolves to may change.
    """
    if not isinstance(url, str):
        raise InvalidArguments(f"{field} must be a string (an http:// or https:// URL)",
                               fields=[{"field": field, "message": "must be a string"}])
    try:
        webhook_destination(url, AllowList.parse(neutrino_settings().webhook_allowed_hosts), resolve=resolve)
    except UrlRefused as exc:
        raise InvalidArguments(f"{field} {exc}", fields=[{"field": field, "message": str(exc)}])
    return url


# --- task callbacks ---------------------------------------------------------------------------------


def task_callback_payload(row: dict[str, Any]) -> dict[str, Any]:
    """What a task callback says: the task's final state."""
    return {
        "event": DeliveryEvent.TASK_FINISHED.value,
        "task": {
            "task_id": str(row["id"]), "function": row["function_name"], "status": row["status"],
            "pool": row["pool"], "attempt": row["attempt"], "result": row["result"],
            "error": row["error"] or None, "error_type": row["error_type"] or None,
            "created_at": row["created_at"], "started_at": row["started_at"],
            "completed_at": row["completed_at"], "duration_ms": row["duration_ms"],
        },
    }


def callbacks_collect(*, now: datetime | None = None, limit: int = COLLECT_BATCH) -> int:
    """Queue the callback of each finished task that has one not yet queued; how many were queued.

    Reads the partial index `idx_callback_due` (tasks with a callback still to queue); each task is taken
    over by a conditional UPDATE, so two schedulers queue one callback (the unique constraint agrees).
    """
    now = now or timezone.now()
    rows = list(Task.objects.filter(callback_url__isnull=False, status__in=FINISHED_STATUSES)
                .order_by().values(*TASK_FIELDS)[:limit])  # no ORDER BY: any due rows, read off the index
    queued = 0
    for row in rows:
        try:
            with transaction.atomic():
                if not Task.objects.filter(id=row["id"], callback_url=row["callback_url"]).update(callback_url=None):
                    continue  # another scheduler took it
                webhook_enqueue(url=row["callback_url"], event=DeliveryEvent.TASK_FINISHED,
                                payload=task_callback_payload(row), now=now, task_id=row["id"])
        except IntegrityError:
            # Already queued (the unique constraint on task_id for callbacks): let go of the URL, so the
            # task is not read again each round.
            Task.objects.filter(id=row["id"]).update(callback_url=None)
            continue
        queued += 1
    return queued


# --- sending ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Claimed:
    delivery: WebhookDelivery
    attempt: int


def webhooks_send_due(*, sender: WebhookSender, now: datetime | None = None, limit: int = SEND_BATCH) -> int:
    """Send the deliveries whose attempt is due (at most `limit`); how many attempts were made."""
    now = now or timezone.now()
    due = list(WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
               .order_by("next_attempt_at").values_list("id", "next_attempt_at", "attempts")[:limit])
    claimed: list[_Claimed] = []
    for delivery_id, due_at, attempts in due:
        taken = WebhookDelivery.objects.filter(
            id=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at=due_at, attempts=attempts,
        ).update(next_attempt_at=now + timedelta(seconds=LEASE_S), attempts=F("attempts") + 1)
        if taken:
            claimed.append(_Claimed(delivery=WebhookDelivery(id=delivery_id), attempt=attempts + 1))
    if not claimed:
        return 0
    found = WebhookDelivery.objects.select_related("target").in_bulk([c.delivery.id for c in claimed])
    claimed = [_Claimed(delivery=found[c.delivery.id], attempt=c.attempt) for c in claimed if c.delivery.id in found]
    callback_secret = neutrino_settings().callback_secret
    outgoing = [Outgoing(delivery_id=c.delivery.id, url=c.delivery.url, event=c.delivery.event,
                         body=c.delivery.payload.encode(),
                         secret=c.delivery.target.secret if c.delivery.target is not None else callback_secret)
                for c in claimed]
    outcomes = sender.send_all(outgoing)
    for item, outcome in zip(claimed, outcomes, strict=True):
        _record_attempt(item, outcome)
    return len(claimed)


def _record_attempt(item: _Claimed, outcome: SendOutcome) -> None:
    """The attempt's outcome on its row: delivered, failed for good, or due again after the backoff."""
    now = timezone.now()
    delivery = item.delivery
    fields: dict[str, Any] = {"last_status_code": outcome.status_code, "last_error": outcome.error}
    if outcome.delivered:
        fields.update(status=DeliveryStatus.DELIVERED, delivered_at=now, last_error="")
    elif outcome.final or item.attempt >= delivery.max_attempts:
        fields.update(status=DeliveryStatus.FAILED)
        logger.warning("webhook %s (%s to %s) failed after %d attempt(s): %s", delivery.id, delivery.event,
                       delivery.url, item.attempt, outcome.error)
    else:
        fields.update(next_attempt_at=now + timedelta(seconds=retry_delay_s(item.attempt)))
    # Only the claim's own attempt is recorded: a lease that ran out meanwhile belongs to a newer attempt.
    WebhookDelivery.objects.filter(id=delivery.id, status=DeliveryStatus.PENDING,
                                   attempts=item.attempt).update(**fields)


def webhook_retry_now(*, delivery_id: int) -> bool:
    """Send a failed (or waiting) delivery again at the scheduler's next tick, with a fresh count of attempts."""
    return bool(WebhookDelivery.objects.filter(id=delivery_id).exclude(status=DeliveryStatus.DELIVERED).update(
        status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=timezone.now()))
