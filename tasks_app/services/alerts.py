"""Writes: alert rules and targets (dashboard, admin), and the scheduler's evaluation of the rules.

`alerts_evaluate` runs in the scheduler's `alerts` job: it measures each enabled rule
(`tasks_app.selectors.alerts`), records what it saw, and moves a rule whose verdict changed with one
conditional UPDATE (`WHERE state = <the state it read>`). Several schedulers may evaluate at once: only
one UPDATE of a change matches, and the notification is queued in the same transaction as that UPDATE,
so each change (ok -> firing, firing -> ok) notifies once. Rules without a verdict (too few finished
tasks) keep their state.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from tasks_app.alert_models import AlertRule, AlertState, DeliveryEvent, WebhookTarget
from tasks_app.selectors.alerts import LiveWorkers, Measure, alert_measure
from tasks_app.services.webhooks import webhook_enqueue

logger = logging.getLogger("neutrino.alerts")

MESSAGE_CHARS = 300


def alerts_evaluate(*, live_workers: LiveWorkers, now: datetime | None = None) -> int:
    """Evaluate every enabled rule once; how many changed state (each change queues its notification)."""
    now = now or timezone.now()
    changed = 0
    for rule in AlertRule.objects.filter(enabled=True).select_related("target").order_by("id"):
        try:
            measure = alert_measure(rule=rule, now=now, live_workers=live_workers)
        except Exception:  # one broken rule must not stop the others
            logger.exception("alert rule %s could not be evaluated", rule.name)
            continue
        AlertRule.objects.filter(id=rule.id).update(value=measure.value, message=measure.message[:MESSAGE_CHARS],
                                                    evaluated_at=now)
        if measure.value is None:
            continue
        wanted = AlertState.FIRING if measure.firing else AlertState.OK
        if wanted != rule.state and _change_state(rule=rule, to=wanted, measure=measure, now=now):
            changed += 1
    return changed


def _change_state(*, rule: AlertRule, to: str, measure: Measure, now: datetime) -> bool:
    """Move `rule` from the state it was read in to `to` and queue its notification; False if another
    scheduler moved it first."""
    with transaction.atomic():
        moved = AlertRule.objects.filter(id=rule.id, state=rule.state, enabled=True).update(
            state=to, state_changed_at=now)
        if not moved:
            return False
        target = rule.target
        if target is not None and target.enabled:
            event = DeliveryEvent.ALERT_FIRING if to == AlertState.FIRING else DeliveryEvent.ALERT_RESOLVED
            webhook_enqueue(url=target.url, event=event, payload=alert_payload(rule=rule, event=event, measure=measure,
                                                                               now=now),
                            now=now, target=target, rule=rule)
    logger.warning("alert %s is %s: %s", rule.name, to, measure.message)
    return True


def alert_payload(*, rule: AlertRule, event: str, measure: Measure, now: datetime) -> dict[str, Any]:
    return {
        "event": event,
        "at": now,
        "rule": {"id": rule.id, "name": rule.name, "kind": rule.kind, "condition": rule.condition,
                 "function": rule.function_name or None, "pool": rule.pool or None, "threshold": rule.threshold,
                 "window_s": rule.window_s},
        "state": AlertState.FIRING.value if event == DeliveryEvent.ALERT_FIRING else AlertState.OK.value,
        "value": measure.value,
        "message": measure.message,
    }


# --- rules and targets (dashboard, admin) ---------------------------------------------------------------


def alert_rule_save(*, rule: AlertRule) -> AlertRule:
    """Save a rule made or changed in a form (validated there). A disabled rule is `ok` again, quietly:
    the banner shows enabled rules only, and enabling it starts from a fresh verdict."""
    if not rule.enabled:
        rule.state = AlertState.OK
    rule.save()
    return rule


def alert_rule_delete(*, rule: AlertRule) -> None:
    rule.delete()


def webhook_target_save(*, target: WebhookTarget) -> WebhookTarget:
    target.save()
    return target


def webhook_target_delete(*, target: WebhookTarget) -> None:
    """Delete a target and its deliveries; the rules that used it keep going, banner only."""
    target.delete()
