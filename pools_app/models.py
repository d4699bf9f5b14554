"""Worker pools an admin defines, and the worker processes that serve them."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models

from pools_app.validation import pool_errors

pool_name_validator = RegexValidator(
    r"^[A-Za-z_][A-Za-z0-9_]*$",
    "Pool names become NATS subject tokens: letters, digits and underscores, not starting with a digit.",
)


class PoolKind(models.TextChoices):
    CPU = "cpu"
    GPU = "gpu"
    MEMORY = "memory"


class PoolMode(models.TextChoices):
    HTTP = "http"  # the fast pool: sync tasks run inside the HTTP servers
    NATS = "nats"  # queued through JetStream to workers


class Pool(models.Model):
    name = models.CharField(max_length=64, unique=True, validators=[pool_name_validator])
    kind = models.CharField(max_length=8, choices=PoolKind.choices, default=PoolKind.CPU)
    mode = models.CharField(max_length=8, choices=PoolMode.choices, default=PoolMode.NATS)
    enabled = models.BooleanField(default=True)
    draining = models.BooleanField(
        default=False,
        help_text="New tasks are refused (503); its workers finish the waiting ones, then it can be deleted.",
    )
    concurrency = models.PositiveIntegerField(default=2, validators=[MinValueValidator(1)])

    # Scaling (read by the autoscaler).
    min_replicas = models.PositiveIntegerField(default=1)
    max_replicas = models.PositiveIntegerField(default=4)
    target_backlog_per_replica = models.PositiveIntegerField(default=10, validators=[MinValueValidator(1)])
    scale_down_delay_s = models.PositiveIntegerField(default=300)
    max_backlog = models.PositiveIntegerField(
        default=0, help_text="New submits get 429 past this many waiting tasks (0: no limit)."
    )

    # Kubernetes shape.
    image = models.CharField(max_length=300, blank=True, default="")
    cpu_request = models.CharField(max_length=32, blank=True, default="500m")
    cpu_limit = models.CharField(max_length=32, blank=True, default="2")
    memory_request = models.CharField(max_length=32, blank=True, default="512Mi")
    memory_limit = models.CharField(max_length=32, blank=True, default="2Gi")
    gpu_count = models.PositiveIntegerField(default=0)
    gpu_resource = models.CharField(max_length=100, blank=True, default="nvidia.com/gpu")
    node_selector = models.JSONField(default=dict, blank=True)
    tolerations = models.JSONField(default=list, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def subject(self) -> str:
        return f"neutrino.{self.name}.*"

    def clean(self) -> None:
        """Rules across fields (min <= max, a gpu pool asks for a GPU, Kubernetes quantities, ...)."""
        errors = pool_errors(self)
        if errors:
            raise ValidationError(errors)


class Worker(models.Model):
    """A worker process, known by its heartbeats."""

    worker_id = models.CharField(max_length=200, unique=True)
    pool = models.CharField(max_length=64)
    host = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    concurrency = models.PositiveIntegerField()
    running = models.PositiveIntegerField(default=0)
    gpus = models.JSONField(default=list, blank=True)
    started_at = models.DateTimeField()
    last_heartbeat = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["pool", "worker_id"]
        indexes = [models.Index(fields=["pool", "last_heartbeat"], name="idx_worker_pool_beat")]

    def __str__(self) -> str:
        return self.worker_id


class ScalingDecision(models.Model):
    """One tick of the autoscaler for one pool: what it saw, what it wanted and why.

    Written by `pools_app.services.scaling_decision_record`, which keeps a day of them. `pool` is the
    name, not a foreign key: the history of a deleted pool stays readable until it ages out.
    """

    pool = models.CharField(max_length=64)
    at = models.DateTimeField()
    pending = models.PositiveIntegerField(help_text="Messages in the stream not yet delivered.")
    in_flight = models.PositiveIntegerField(help_text="Messages delivered to a worker, not yet acknowledged.")
    current = models.PositiveIntegerField(help_text="Replicas running (local) or set (Kubernetes) before the tick.")
    desired = models.PositiveIntegerField()
    reason = models.CharField(max_length=300)
    actuator = models.CharField(max_length=16, default="local", help_text="local (neutrino dev) or kubernetes.")

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["pool", "-at"], name="idx_scaling_pool_at"),
            models.Index(fields=["at"], name="idx_scaling_at"),
        ]

    def __str__(self) -> str:
        return f"{self.pool} {self.current}->{self.desired} at {self.at:%H:%M:%S}: {self.reason}"

    @property
    def backlog(self) -> int:
        return self.pending + self.in_flight
