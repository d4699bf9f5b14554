"""The task ledger: one row per task, whatever path it took."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import models

from neutrino.app import EXECUTION_MODES, PRIORITIES
from tasks_app.core.storable import storable_text


class TaskStatus(models.TextChoices):
    SCHEDULED = "scheduled"  # held in the database until `run_at`, then queued (no message exists yet)
    PENDING = "pending"  # row written, broker has not acknowledged yet
    QUEUED = "queued"  # JetStream acknowledged the message
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # not started before `expires_at`: never ran


ACTIVE_STATUSES = (TaskStatus.SCHEDULED, TaskStatus.PENDING, TaskStatus.QUEUED, TaskStatus.RUNNING)
FINISHED_STATUSES = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED)
# Not started yet: what a delay or an expiry still applies to.
WAITING_STATUSES = (TaskStatus.SCHEDULED, TaskStatus.PENDING, TaskStatus.QUEUED)
# `Task.created_by` of a task an anonymous caller (NEUTRINO_ALLOW_ANONYMOUS, dev only) created.
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class TaskCreator:
    """Who creates a task, as its two columns: a label to show (`token:<name>`, `user:<username>`,
    `anonymous`) and, for a token, its id. The id is what ownership is checked on: a revoked token's
    name can be given to a new token, which must not inherit the old one's tasks."""

    label: str
    token_id: int | None = None

    def fields(self) -> dict[str, Any]:
        return {"created_by": self.label, "created_by_token_id": self.token_id}


class Task(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    function_name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=TaskStatus.choices)
    pool = models.CharField(max_length=64)
    # The modes of the SDK (`neutrino.app.ExecutionMode`), labelled as the first migration has them.
    execution_mode = models.CharField(max_length=8, choices=[(mode, mode.capitalize()) for mode in EXECUTION_MODES])

    created_at = models.DateTimeField()
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # A delayed task is `scheduled` until this time, then queued (set on delayed tasks only).
    run_at = models.DateTimeField(null=True, blank=True)
    # Not started by this time: the task ends `expired` without running.
    expires_at = models.DateTimeField(null=True, blank=True)
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
    # A retry with changes: what it changed from the task it retries, as {field: {"before", "after"}}.
    retry_changes = models.JSONField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    # The order its pool's workers take waiting tasks in (neutrino.app.PRIORITIES): high, normal, low.
    priority = models.CharField(max_length=8, default="normal", choices=[(p, p.capitalize()) for p in PRIORITIES])
    # `unique_for_s`: `<function>:<hash of the chosen arguments>` while the window runs (`unique_until`);
    # the unique index makes the database the one judge between gateways (tasks_app.services.unique).
    unique_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    unique_until = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # The W3C traceparent of the submit that made it, when tracing was on (workers.engine.tracing): the
    # dashboard's trace link, and the link of a retry to the trace of the task it retries.
    traceparent = models.CharField(max_length=64, blank=True, default="")

    # Who created it (TaskCreator); "" on rows older than the column (only admin tokens see those in the API).
    created_by = models.CharField(max_length=120, blank=True, default="")
    # The token, when a token created it: a token that is not an admin sees only its own tasks.
    # Its composite index below serves that lookup, so the FK has none of its own.
    created_by_token = models.ForeignKey("ApiToken", null=True, blank=True, on_delete=models.SET_NULL,
                                         related_name="tasks", db_index=False)
    # Where to POST the task's final state (tasks_app.services.callbacks). Set at submit; set back to NULL
    # when the scheduler hands the callback to a WebhookDelivery row, which keeps the URL from then on.
    callback_url = models.CharField(max_length=2000, null=True, blank=True)
    # [limits] The task's concurrency key (the value of its `concurrency_key` argument), written when a
    # worker first tries to start it; "" for tasks without limits (tasks_app.services.limits).
    concurrency_key = models.CharField(max_length=200, blank=True, default="")

    # Fan-out and fan-in (tasks_app.services.groups). Plain UUID columns, not foreign keys: retention
    # deletes old rows in any order, and a child outlives its parent's row without a cascade.
    parent_id = models.UUIDField(null=True, blank=True)  # the task that submitted this one
    group_id = models.UUIDField(null=True, blank=True)  # the TaskGroup this task is a member of
    group_index = models.PositiveIntegerField(null=True, blank=True)  # its place in the group's items

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("cancel_task", "Can cancel tasks (dashboard)"),
            ("retry_task", "Can retry tasks (dashboard)"),
            # Deleting (bulk actions, finished tasks only) needs Django's own `delete_task`.
        ]
        indexes = [
            # Keyset pagination walks (created_at, id) newest first; each filter the list offers
            # has its own composite index so a filtered page is an index range scan.
            models.Index(fields=["-created_at", "-id"], name="idx_created_at"),
            models.Index(fields=["status", "-created_at"], name="idx_status"),
            models.Index(fields=["function_name", "-created_at"], name="idx_function_name"),
            models.Index(fields=["pool", "-created_at"], name="idx_pool"),
            # The dashboard's mode filter (sync / async / gpu).
            models.Index(fields=["execution_mode", "-created_at"], name="idx_execution_mode"),
            # A pool's backlog (pending + queued), counted on every submit to a pool with a max_backlog;
            # created_at makes its oldest waiting task a seek (the alerts' oldest-waiting rule).
            models.Index(fields=["pool", "status", "created_at"], name="idx_pool_status"),
            # A token's own tasks, newest first (GET /tasks with a token that is not an admin).
            models.Index(fields=["created_by_token", "-created_at"], name="idx_created_by_token"),
            # The scheduler's due delayed tasks (status = scheduled, run_at <= now), soonest first.
            models.Index(fields=["status", "run_at"], name="idx_status_run_at"),
            # The scheduler's expiry sweep (a waiting status, expires_at <= now).
            models.Index(fields=["status", "expires_at"], name="idx_status_expires_at"),
            # The list's and the bulk actions' error type filter.
            models.Index(fields=["error_type", "-created_at"], name="idx_error_type"),
            # Finished tasks whose callback is still to be sent: partial, so it holds only the tasks
            # submitted with a callback_url, until the scheduler takes each one over.
            models.Index(fields=["status"], condition=models.Q(callback_url__isnull=False),
                         name="idx_callback_due"),
            # [limits] The running tasks of one function and key, counted by every limited claim.
            models.Index(fields=["function_name", "concurrency_key"], condition=models.Q(status="running"),
                         name="idx_running_key"),
            # A task's children, newest first (partial: most tasks have no parent).
            models.Index(fields=["parent_id", "-created_at"], condition=models.Q(parent_id__isnull=False),
                         name="idx_parent"),
            # A group's members by status: the fan-in's "is any still unfinished" is a seek per status,
            # the detail page's counts one range scan, the results one scan in item order.
            models.Index(fields=["group_id", "status", "group_index"], condition=models.Q(group_id__isnull=False),
                         name="idx_group_status"),
        ]

    def __str__(self) -> str:
        return f"{self.function_name} {self.id} ({self.status})"


class GroupPolicy(models.TextChoices):
    ALL = "all"  # the callback runs only when every member completed; otherwise it ends failed, unrun
    COLLECT = "collect"  # the callback always runs, with the results and the failures


class TaskGroup(models.Model):
    """Many tasks that, once all have finished, fire one callback task (tasks_app.services.groups).

    A chain is groups of one member each: the callback of step n is the only member of the group of
    step n + 1 (`chain_id` names the chain's first group, `chain_rest` the steps still to make).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    function_name = models.CharField(max_length=200)  # the members' function
    size = models.PositiveIntegerField()
    then_function = models.CharField(max_length=200, blank=True, default="")  # the callback; empty: none
    # The callback as a row to make (tasks_app.services.fan_in.Step): function, args, pool, timeout, retries.
    then_step = models.JSONField(null=True, blank=True)
    policy = models.CharField(max_length=8, choices=GroupPolicy.choices, default=GroupPolicy.ALL)
    chain_id = models.UUIDField(null=True, blank=True, db_index=True)
    chain_step = models.PositiveIntegerField(default=0)
    chain_rest = models.JSONField(default=list, blank=True)  # [{"function": ..., "args": {...}}, ...]
    parent_id = models.UUIDField(null=True, blank=True)  # the task that made the group, if a task did
    created_at = models.DateTimeField()
    created_by = models.CharField(max_length=120, blank=True, default="")
    created_by_token_id = models.IntegerField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)  # cancelled: its callback ends cancelled, unrun
    # Set once, by the one conditional UPDATE that wins the fan-in (`WHERE fired_at IS NULL`).
    fired_at = models.DateTimeField(null=True, blank=True)
    callback_task_id = models.UUIDField(null=True, blank=True, unique=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The sweeper's groups still waiting to fire (partial: fired groups leave it).
            models.Index(fields=["created_at"], condition=models.Q(fired_at__isnull=True), name="idx_group_open"),
        ]

    def __str__(self) -> str:
        return f"group of {self.size} {self.function_name} {self.id}"


class ApiToken(models.Model):
    """A bearer token for the API. Only a SHA-256 of the secret is stored; `prefix` identifies it in lists.

    Created by `tasks_app.services.tokens.token_create` (CLI, Django admin), which shows the secret once.
    """

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="The token's first characters, to tell tokens apart.")
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="api_tokens")
    created_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # An admin token sees, cancels and retries every task; another only the tasks it created.
    admin = models.BooleanField(default=False, help_text="Sees, cancels and retries every task, not only its own.")
    # The task names it may call; empty: every task.
    allowed_tasks = models.JSONField(default=list, blank=True,
                                     help_text="The tasks this token may call; empty: every task.")

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"
        constraints = [
            # A name names one live token; a revoked token's name can be used again.
            models.UniqueConstraint(fields=["name"], condition=models.Q(revoked_at__isnull=True),
                                    name="uniq_live_token_name"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class TaskAttempt(models.Model):
    """An attempt of a queued task that ended without finishing it: retried after an error, handed back by
    a stopping worker, or lost with a worker that died. The current (or last) attempt is the task row."""

    class Outcome(models.TextChoices):
        RETRIED = "retried"
        HANDED_BACK = "handed back"
        LOST = "lost"

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="past_attempts")
    attempt = models.PositiveIntegerField()
    worker_id = models.CharField(max_length=200, blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["task", "attempt"]

    def __str__(self) -> str:
        return f"{self.task_id} attempt {self.attempt} ({self.outcome})"


class MissedRuns(models.TextChoices):
    """What a schedule does with the slots that passed while no scheduler ran."""

    SKIP = "skip"  # fire none of them; go on from the next slot to come
    ONCE = "once"  # fire one task for them all (the latest slot)
    ALL = "all"  # fire one task per slot, up to the schedule's `catchup_max`


class Schedule(models.Model):
    """A task fired on a cron expression or a fixed interval, in a time zone, until paused.

    Managed in the dashboard, the Django admin, the API (`/schedules`) and from code
    (`@app.task(schedule=...)`, `source="code"`). Every fire is a `ScheduleFire` row keyed by
    (schedule, slot): however many schedulers run, a slot fires at most once.
    """

    class Source(models.TextChoices):
        USER = "user"  # made in the dashboard, the admin or the API
        CODE = "code"  # declared by `@app.task(schedule=...)`, updated at each start-up

    name = models.CharField(max_length=100, unique=True)
    function_name = models.CharField(max_length=200)
    args = models.JSONField(default=dict, blank=True)
    # Exactly one of the two: a 5-field cron expression (or @hourly-style name), or an interval.
    cron = models.CharField(max_length=120, blank=True, default="")
    interval_s = models.PositiveIntegerField(null=True, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    enabled = models.BooleanField(default=True)
    missed = models.CharField(max_length=8, choices=MissedRuns.choices, default=MissedRuns.SKIP)
    catchup_max = models.PositiveIntegerField(default=10)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.USER)
    description = models.CharField(max_length=300, blank=True, default="")

    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    created_by = models.CharField(max_length=120, blank=True, default="")
    # The next slot to fire (None while paused); the scheduler fires every enabled schedule whose
    # next_run_at has come.
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_fired_at = models.DateTimeField(null=True, blank=True)
    # Who paused it ("user:ada", "token:ops"), or CODE_GONE when its decorator left the code: only that
    # pause is lifted when the decorator comes back (a person's pause stays).
    paused_by = models.CharField(max_length=120, blank=True, default="")

    CODE_GONE = "code: decorator removed"

    class Meta:
        ordering = ["name"]
        permissions = [("run_schedule", "Can run a schedule now (dashboard)")]
        indexes = [models.Index(fields=["enabled", "next_run_at"], name="idx_schedule_due")]

    def __str__(self) -> str:
        return self.name


class ScheduleFire(models.Model):
    """One slot of a schedule that fired, and the task it made. The unique (schedule, slot_at) pair is
    what keeps two schedulers, a restart in the middle of a tick or a clock jump from firing a slot twice."""

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="fires")
    slot_at = models.DateTimeField()
    fired_at = models.DateTimeField()
    task = models.ForeignKey(Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # "slot", "missed" (a late slot fired by the missed-run policy) or "manual" (run now).
    reason = models.CharField(max_length=16, default="slot")

    class Meta:
        ordering = ["-slot_at"]
        constraints = [models.UniqueConstraint(fields=["schedule", "slot_at"], name="uniq_schedule_slot")]

    def __str__(self) -> str:
        return f"{self.schedule_id} @ {self.slot_at}"


class TaskLogChunk(models.Model):
    """A piece of what one attempt of a task wrote (`workers.engine.logs.format` text), in the order
    `seq` gives. A chunk is what the executor read at once: every half second while the task runs, and
    once when it ends; an attempt's log is its chunks joined. Deleted with its task (cascade)."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="log_chunks", db_index=False)
    attempt = models.PositiveIntegerField()
    seq = models.PositiveIntegerField()
    written_at = models.DateTimeField()
    text = models.TextField()
    # What the cap (NEUTRINO_LOG_MAX_BYTES) had left out of the attempt by this chunk: an attempt's figure
    # is its chunks' largest.
    dropped_bytes = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["task", "attempt", "seq"]
        constraints = [
            # Also the index every read of a log walks (task, attempt, seq), and the one the cascade uses.
            models.UniqueConstraint(fields=["task", "attempt", "seq"], name="uniq_task_log_chunk"),
        ]

    def __str__(self) -> str:
        return f"{self.task_id} attempt {self.attempt} #{self.seq}"

    @classmethod
    def from_read(cls, *, task_id: str, attempt: int, seq: int, data: bytes, dropped_bytes: int,
                  written_at: datetime) -> TaskLogChunk:
        """A chunk from what the executor read (UTF-8 records; raw output may hold anything, even NUL)."""
        return cls(task_id=task_id, attempt=attempt, seq=seq, written_at=written_at, dropped_bytes=dropped_bytes,
                   text=storable_text(data.decode("utf-8", "replace")))


# Bulk actions and the audit trail (their own module; imported here so that Django registers them).
# The alert rules, webhook targets and webhook deliveries live in their own module (tasks_app.alert_models).
from tasks_app.alert_models import AlertRule, WebhookDelivery, WebhookTarget  # noqa: E402, F401
from tasks_app.limit_models import RateBucket  # noqa: E402, F401
from tasks_app.operator_models import AuditRecord, BulkAction  # noqa: E402, F401
