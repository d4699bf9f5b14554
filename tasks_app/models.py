"""The task ledger: one row per task, whatever path it took."""

from __future__ import annotations

import uuid

from django.db import models


class TaskStatus(models.TextChoices):
    PENDING = "pending"  # row written, broker has not acknowledged yet
    QUEUED = "queued"  # JetStream acknowledged the message
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_STATUSES = (TaskStatus.PENDING, TaskStatus.QUEUED, TaskStatus.RUNNING)
FINISHED_STATUSES = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


class ExecutionMode(models.TextChoices):
    SYNC = "sync"
    ASYNC = "async"
    GPU = "gpu"


class Task(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    function_name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=TaskStatus.choices)
    pool = models.CharField(max_length=64)
    execution_mode = models.CharField(max_length=8, choices=ExecutionMode.choices)

    created_at = models.DateTimeField()
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)

    worker_id = models.CharField(max_length=200, blank=True, default="")
    attempt = models.PositiveIntegerField(default=0)
    max_retries = models.PositiveIntegerField(default=0)
    timeout_ms = models.PositiveIntegerField()

    args = models.JSONField(default=dict)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    error_type = models.CharField(max_length=200, blank=True, default="")
    traceback = models.TextField(blank=True, default="")

    progress = models.FloatField(null=True, blank=True)
    progress_message = models.CharField(max_length=200, blank=True, default="")

    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    cancel_requested = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # Keyset pagination walks (created_at, id) newest first; each filter the list offers
            # has its own composite index so a filtered page is an index range scan.
            models.Index(fields=["-created_at", "-id"], name="idx_created_at"),
            models.Index(fields=["status", "-created_at"], name="idx_status"),
            models.Index(fields=["function_name", "-created_at"], name="idx_function_name"),
            models.Index(fields=["pool", "-created_at"], name="idx_pool"),
        ]

    def __str__(self) -> str:
        return f"{self.function_name} {self.id} ({self.status})"
