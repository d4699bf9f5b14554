"""Worker pools an admin defines, and the worker processes that serve them."""

from __future__ import annotations

from django.core.validators import MinValueValidator, RegexValidator
from django.db import models

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
