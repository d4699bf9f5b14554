"""What operators did: bulk actions over a filter of tasks, and the audit trail of every human action.

Defined here, imported by `tasks_app.models` (so Django registers them with the app): the task table's
module stays about tasks.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import models


class BulkActionKind(models.TextChoices):
    CANCEL = "cancel"  # pending, queued, scheduled or running tasks end cancelled (running ones are killed)
    RETRY = "retry"  # each finished task runs again as a new task (retry_of set), pools' backlogs respected
    DELETE = "delete"  # finished tasks' rows are deleted; active ones are left alone


class BulkActionStatus(models.TextChoices):
    QUEUED = "queued"  # written; no scheduler has claimed it yet
    RUNNING = "running"
    DONE = "done"
    STOPPED = "stopped"  # an operator stopped it between two chunks
    FAILED = "failed"  # an error ended it; `note` says which


BULK_FINISHED = (BulkActionStatus.DONE, BulkActionStatus.STOPPED, BulkActionStatus.FAILED)


class BulkAction(models.Model):
    """One cancel, retry or delete of every task a filter matched when it was asked for.

    Worked in chunks by a `neutrino scheduler` job (`tasks_app.services.bulk.bulk_work`): a scheduler
    claims it with a conditional UPDATE and holds it while `lease_until` is renewed, so a second scheduler
    takes over only from one that stopped answering. The walk is a keyset over (created_at, id), newest
    first, from `cursor_*`; tasks created after `snapshot_at` are never touched (a retry's new tasks match
    the same filter).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    action = models.CharField(max_length=8, choices=BulkActionKind.choices)
    # The task filter as `tasks_app.services.bulk.filter_from_json` reads it (absolute times only).
    filter = models.JSONField(default=dict)
    status = models.CharField(max_length=8, choices=BulkActionStatus.choices, default=BulkActionStatus.QUEUED)
    total = models.PositiveIntegerField(default=0)  # the tasks the filter matched when it was asked for
    done = models.PositiveIntegerField(default=0)  # acted on
    failed = models.PositiveIntegerField(default=0)  # matched but not acted on (finished meanwhile, refused, ...)
    note = models.CharField(max_length=500, blank=True, default="")
    stop_requested = models.BooleanField(default=False)

    created_by = models.CharField(max_length=120)
    created_at = models.DateTimeField()
    snapshot_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    claimed_by = models.CharField(max_length=200, blank=True, default="")
    lease_until = models.DateTimeField(null=True, blank=True)
    # The last task worked (the walk goes on below it); None: from the top.
    cursor_created_at = models.DateTimeField(null=True, blank=True)
    cursor_id = models.UUIDField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        # The scheduler's claim: the unfinished ones, oldest first.
        indexes = [models.Index(fields=["status", "created_at"], name="idx_bulk_status")]

    def __str__(self) -> str:
        return f"{self.action} of {self.total} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in BULK_FINISHED

    @property
    def processed(self) -> int:
        return self.done + self.failed

    @property
    def percent(self) -> int:
        if self.finished and self.status == BulkActionStatus.DONE:
            return 100
        return min(100, int(100 * self.processed / self.total)) if self.total else 0


class AppendOnly(Exception):
    """An audit record was to be changed or deleted: they are written once and kept."""


class AuditRecord(models.Model):
    """One human action: who, when, from where, what, and the object before and after it.

    Written by `tasks_app.services.audit.audit_record` only. Never changed or deleted through the ORM's
    instances (save of a stored record and delete raise `AppendOnly`); the Django admin shows them read-only.
    """

    at = models.DateTimeField()
    actor = models.CharField(max_length=150)  # "user:<username>", "token:<name>", "cli:<os user>", "system"
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True, default="")
    action = models.CharField(max_length=64)  # "<object type>.<verb>": task.cancel, pool.change, token.create ...
    object_type = models.CharField(max_length=32)
    object_id = models.CharField(max_length=200, blank=True, default="")
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        # Viewing only: nobody is given a permission to add, change or delete one.
        default_permissions = ("view",)
        indexes = [
            # The audit page walks (at, id) newest first; each filter it offers has its own index.
            models.Index(fields=["-at", "-id"], name="idx_audit_at"),
            models.Index(fields=["actor", "-at"], name="idx_audit_actor"),
            models.Index(fields=["action", "-at"], name="idx_audit_action"),
            models.Index(fields=["object_type", "object_id", "-at"], name="idx_audit_object"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.object_type} {self.object_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnly(f"audit record {self.pk} is append-only: it cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise AppendOnly(f"audit record {self.pk} is append-only: it cannot be deleted")
