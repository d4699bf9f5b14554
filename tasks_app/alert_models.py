"""Alert rules, the webhook targets they notify, and every webhook Neutrino sends (alerts and task callbacks).

Imported by `tasks_app.models`, so they are models of the tasks app. The scheduler evaluates the rules
(`tasks_app.services.alerts`) and sends the deliveries (`tasks_app.services.webhooks`).
"""

from __future__ import annotations

import secrets

from django.core.exceptions import ValidationError
from django.db import models

SECRET_BYTES = 32


def new_webhook_secret() -> str:
    """A target's signing secret: 64 hex characters, shown on the Alerts page and in the admin."""
    return secrets.token_hex(SECRET_BYTES)


class WebhookTarget(models.Model):
    """A URL that alert notifications are POSTed to, each body signed with this target's secret."""

    name = models.CharField(max_length=100, unique=True)
    url = models.CharField(max_length=2000, help_text="http(s) URL; NEUTRINO_WEBHOOK_ALLOWED_HOSTS decides "
                                                      "which hosts may be called.")
    secret = models.CharField(max_length=128, default=new_webhook_secret,
                              help_text="Signs each body (Neutrino-Signature header); the receiver keeps a copy.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class AlertKind(models.TextChoices):
    FAILURE_RATE = "failure_rate", "Failure rate of a function (%)"
    BACKLOG = "backlog", "Backlog of a pool (pending + queued tasks)"
    OLDEST_WAITING = "oldest_waiting", "Oldest waiting task of a pool (seconds)"
    NO_WORKER = "no_worker", "No live worker in a pool with waiting tasks"


class AlertState(models.TextChoices):
    OK = "ok"
    FIRING = "firing"


class AlertRule(models.Model):
    """A condition the scheduler checks every few seconds. A change of `state` (ok -> firing -> ok) is one
    conditional UPDATE, so however many schedulers evaluate it, each change notifies once."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=AlertKind.choices)
    function_name = models.CharField(max_length=200, blank=True, default="",
                                     help_text="The task function (failure rate rules).")
    pool = models.CharField(max_length=64, blank=True, default="",
                            help_text="The pool (backlog, oldest waiting and no-worker rules).")
    threshold = models.FloatField(default=0, help_text="Fires when the value is above this "
                                                       "(% for failure rate, tasks for backlog, s for age).")
    window_s = models.PositiveIntegerField(default=600, help_text="Failure rate: the tasks created this many "
                                                                  "seconds back.")
    min_finished = models.PositiveIntegerField(default=10, help_text="Failure rate: no verdict on fewer "
                                                                     "finished tasks than this.")
    target = models.ForeignKey(WebhookTarget, null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="rules", help_text="Notified when the rule fires and clears; "
                                                               "none: the dashboard banner only.")
    enabled = models.BooleanField(default=True)

    state = models.CharField(max_length=8, choices=AlertState.choices, default=AlertState.OK)
    state_changed_at = models.DateTimeField(null=True, blank=True)
    value = models.FloatField(null=True, blank=True, help_text="What the last evaluation measured.")
    message = models.CharField(max_length=300, blank=True, default="")
    evaluated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["state", "enabled"], name="idx_alert_state")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """What each kind needs: a function (failure rate) or a pool (the others), and a sensible threshold."""
        errors: dict[str, str] = {}
        if self.kind == AlertKind.FAILURE_RATE:
            if not self.function_name.strip():
                errors["function_name"] = "A failure rate rule watches one task function: name it."
            if not 0 <= self.threshold < 100:
                errors["threshold"] = "A failure rate threshold is a percentage from 0 to 99.9."
            if self.window_s < 10:
                errors["window_s"] = "The window is at least 10 seconds."
            if self.min_finished < 1:
                errors["min_finished"] = "At least 1 finished task is needed for a verdict."
        elif self.kind in AlertKind.values:
            if not self.pool.strip():
                errors["pool"] = "This rule watches one pool: name it."
            if self.threshold < 0:
                errors["threshold"] = "The threshold is 0 or more."
        if errors:
            raise ValidationError(errors)

    @property
    def condition(self) -> str:
        """The rule in words, as the Alerts page lists it."""
        if self.kind == AlertKind.FAILURE_RATE:
            return (f"failure rate of {self.function_name} > {self.threshold:g}% over {self.window_s} s "
                    f"(at least {self.min_finished} finished)")
        if self.kind == AlertKind.BACKLOG:
            return f"backlog of pool {self.pool} > {self.threshold:g} tasks"
        if self.kind == AlertKind.OLDEST_WAITING:
            return f"oldest waiting task of pool {self.pool} > {self.threshold:g} s"
        return f"no live worker in pool {self.pool} while tasks wait"


class DeliveryEvent(models.TextChoices):
    ALERT_FIRING = "alert.firing"
    ALERT_RESOLVED = "alert.resolved"
    TASK_FINISHED = "task.finished"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"  # to be sent at next_attempt_at (again, after a failed attempt)
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # every attempt failed, or the URL is no longer allowed


class WebhookDelivery(models.Model):
    """One webhook to send: the exact body (signed as stored) and how its attempts went.

    The scheduler sends due rows (`status` pending, `next_attempt_at` passed), claiming each attempt with
    a conditional UPDATE; a process that dies mid-send leaves the row to be tried again after its lease.
    """

    target = models.ForeignKey(WebhookTarget, null=True, blank=True, on_delete=models.CASCADE,
                               related_name="deliveries")
    rule = models.ForeignKey(AlertRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries")
    task_id = models.UUIDField(null=True, blank=True)
    url = models.CharField(max_length=2000)
    event = models.CharField(max_length=20, choices=DeliveryEvent.choices)
    payload = models.TextField(help_text="The JSON body, byte for byte as signed and sent.")
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField()
    next_attempt_at = models.DateTimeField()
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="idx_delivery_due"),
            models.Index(fields=["-created_at", "-id"], name="idx_delivery_created"),
        ]
        constraints = [
            # One callback per task, however many schedulers collect finished tasks at once.
            models.UniqueConstraint(fields=["task_id"], condition=models.Q(event=DeliveryEvent.TASK_FINISHED),
                                    name="uniq_task_callback"),
        ]

    def __str__(self) -> str:
        return f"{self.event} -> {self.url} ({self.status})"
