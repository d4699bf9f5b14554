"""Neutrino's settings as one typed object, read from the NEUTRINO_* Django settings."""

from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from tasks_app.core.webhook_policy import AllowList


@dataclass(frozen=True)
class NeutrinoSettings:
    task_modules: tuple[str, ...]
    sync_processes: int
    max_tasks_per_child: int
    start_method: str
    max_payload_bytes: int
    ledger_enabled: bool
    ledger_queue_size: int
    nats_url: str
    asgi_fallback: str
    sync_upstream: str
    ack_wait_s: float
    max_deliver: int
    retry_backoff_s: float
    retry_backoff_max_s: float
    worker_grace_s: float
    heartbeat_s: float
    sweep_after_s: float
    publish_timeout_s: float
    stream_replicas: int
    ws_port: int = 0
    ws_url: str = ""
    allow_anonymous: bool = False
    rate_limit_per_s: float = 0.0
    rate_limit_burst: int = 0
    batch_max: int = 1000
    idempotency_ttl_s: float = 24 * 3600.0
    image_registries: tuple[str, ...] = ("neutrino:",)
    long_poll_max: int = 8
    long_poll_per_caller: int = 2
    ws_session_check_s: float = 30.0
    allowed_origins: frozenset[str] = frozenset()
    log_max_bytes: int = 1_000_000
    tracing: bool = False  # OpenTelemetry traces (workers.engine.tracing)
    trace_exporter: str = "otlp"  # OTEL_TRACES_EXPORTER: otlp or console
    trace_url_template: str = ""  # "https://jaeger.example/trace/{trace_id}": the dashboard links each task's trace
    # Alerts and callbacks (NEUTRINO_WEBHOOK_*, NEUTRINO_CALLBACK_SECRET, NEUTRINO_ALERTS_EVERY_S).
    webhook_allowed_hosts: tuple[str, ...] = ("*",)
    callback_secret: str = ""
    webhook_max_attempts: int = 8
    webhook_backoff_s: float = 10.0
    webhook_timeout_s: float = 10.0
    alerts_every_s: float = 10.0
    webhooks_every_s: float = 1.0
    retention_days: int = 30  # finished tasks older than this are deleted; 0: kept forever
    # (status, days) pairs overriding retention_days for one finished status (a tuple keeps this hashable).
    retention_days_by_status: tuple[tuple[str, int], ...] = ()
    retention_every_s: float = 60.0
    # [objects] Queued tasks' results over this go to the JetStream object store (workers.engine.objects).
    inline_result_bytes: int = 262_144
    max_object_bytes: int = 1 << 30


@functools.cache
def neutrino_settings() -> NeutrinoSettings:
    conf = NeutrinoSettings(
        task_modules=tuple(settings.NEUTRINO_TASK_MODULES),
        sync_processes=int(settings.NEUTRINO_SYNC_PROCESSES),
        max_tasks_per_child=int(settings.NEUTRINO_MAX_TASKS_PER_CHILD),
        start_method=str(settings.NEUTRINO_START_METHOD),
        max_payload_bytes=int(settings.NEUTRINO_MAX_PAYLOAD_BYTES),
        ledger_enabled=bool(settings.NEUTRINO_LEDGER),
        ledger_queue_size=int(settings.NEUTRINO_LEDGER_QUEUE_SIZE),
        nats_url=str(settings.NEUTRINO_NATS_URL),
        asgi_fallback=str(settings.NEUTRINO_ASGI_FALLBACK),
        sync_upstream=str(settings.NEUTRINO_SYNC_UPSTREAM),
        ack_wait_s=float(settings.NEUTRINO_ACK_WAIT_S),
        max_deliver=int(settings.NEUTRINO_MAX_DELIVER),
        retry_backoff_s=float(settings.NEUTRINO_RETRY_BACKOFF_S),
        retry_backoff_max_s=float(settings.NEUTRINO_RETRY_BACKOFF_MAX_S),
        worker_grace_s=float(settings.NEUTRINO_WORKER_GRACE_S),
        heartbeat_s=float(settings.NEUTRINO_HEARTBEAT_S),
        sweep_after_s=float(settings.NEUTRINO_SWEEP_AFTER_S),
        publish_timeout_s=float(settings.NEUTRINO_PUBLISH_TIMEOUT_S),
        stream_replicas=int(settings.NEUTRINO_STREAM_REPLICAS),
        ws_port=int(settings.NEUTRINO_WS_PORT),
        ws_url=str(settings.NEUTRINO_WS_URL),
        allow_anonymous=bool(settings.NEUTRINO_ALLOW_ANONYMOUS),
        rate_limit_per_s=float(settings.NEUTRINO_RATE_LIMIT_PER_S),
        rate_limit_burst=int(settings.NEUTRINO_RATE_LIMIT_BURST),
        batch_max=int(settings.NEUTRINO_BATCH_MAX),
        idempotency_ttl_s=float(settings.NEUTRINO_IDEMPOTENCY_TTL_S),
        image_registries=tuple(settings.NEUTRINO_IMAGE_REGISTRIES) or _default_registries(str(settings.NEUTRINO_IMAGE)),
        long_poll_max=int(settings.NEUTRINO_LONG_POLL_MAX),
        long_poll_per_caller=int(settings.NEUTRINO_LONG_POLL_PER_CALLER),
        ws_session_check_s=float(settings.NEUTRINO_WS_SESSION_CHECK_S),
        # `scheme://host[:port]`, lower case, no trailing slash: as a browser sends its Origin header.
        allowed_origins=frozenset(o.strip().rstrip("/").lower() for o in settings.NEUTRINO_ALLOWED_ORIGINS),
        log_max_bytes=int(getattr(settings, "NEUTRINO_LOG_MAX_BYTES", 1_000_000)),
        tracing=bool(getattr(settings, "NEUTRINO_TRACING", False)),
        trace_exporter=str(getattr(settings, "NEUTRINO_TRACE_EXPORTER", "otlp")),
        trace_url_template=str(getattr(settings, "NEUTRINO_TRACE_URL_TEMPLATE", "")),
        webhook_allowed_hosts=tuple(h.strip().lower() for h in settings.NEUTRINO_WEBHOOK_ALLOWED_HOSTS if h.strip()),
        callback_secret=str(settings.NEUTRINO_CALLBACK_SECRET) or _derived_callback_secret(str(settings.SECRET_KEY)),
        webhook_max_attempts=int(settings.NEUTRINO_WEBHOOK_MAX_ATTEMPTS),
        webhook_backoff_s=float(settings.NEUTRINO_WEBHOOK_BACKOFF_S),
        webhook_timeout_s=float(settings.NEUTRINO_WEBHOOK_TIMEOUT_S),
        alerts_every_s=float(settings.NEUTRINO_ALERTS_EVERY_S),
        webhooks_every_s=float(settings.NEUTRINO_WEBHOOKS_EVERY_S),
        retention_days=int(settings.NEUTRINO_RETENTION_DAYS),
        retention_days_by_status=tuple(sorted(
            (str(status), int(days)) for status, days in settings.NEUTRINO_RETENTION_DAYS_BY_STATUS.items())),
        retention_every_s=float(settings.NEUTRINO_RETENTION_EVERY_S),
        inline_result_bytes=int(getattr(settings, "NEUTRINO_INLINE_RESULT_BYTES", 262_144)),
        max_object_bytes=int(getattr(settings, "NEUTRINO_MAX_OBJECT_BYTES", 1 << 30)),
    )
    _validate(conf)
    return conf


def _derived_callback_secret(secret_key: str) -> str:
    """The callbacks' signing secret when none is set: every server of one deployment derives the same one
    from its Django secret key, and the key cannot be worked back from it."""
    return hmac.new(secret_key.encode(), b"neutrino.callbacks", hashlib.sha256).hexdigest()


def _default_registries(image: str) -> tuple[str, ...]:
    """Any tag of Neutrino's own image, and of the repository of NEUTRINO_IMAGE: just those repositories,
    not their registries (`neutrino/...` on Docker Hub is anyone's)."""
    repository = image.split("@", 1)[0]
    if ":" in repository.rsplit("/", 1)[-1]:
        repository = repository.rsplit(":", 1)[0]
    return ("neutrino:",) + ((f"{repository}:",) if repository and repository != "neutrino" else ())


def _validate(conf: NeutrinoSettings) -> None:
    if conf.sync_processes < 1:
        raise ImproperlyConfigured("NEUTRINO_SYNC_PROCESSES must be at least 1")
    if conf.max_tasks_per_child < 0:
        raise ImproperlyConfigured("NEUTRINO_MAX_TASKS_PER_CHILD must be 0 (never recycle) or more")
    if conf.start_method not in {"forkserver", "spawn"}:
        raise ImproperlyConfigured(
            f"NEUTRINO_START_METHOD must be 'forkserver' or 'spawn', not {conf.start_method!r}"
        )
    if conf.inline_result_bytes < 0:
        raise ImproperlyConfigured("NEUTRINO_INLINE_RESULT_BYTES must be 0 or more")
    if conf.max_object_bytes < 1:
        raise ImproperlyConfigured("NEUTRINO_MAX_OBJECT_BYTES must be positive")
    if conf.max_payload_bytes < 1024:
        raise ImproperlyConfigured("NEUTRINO_MAX_PAYLOAD_BYTES must be at least 1024")
    if conf.log_max_bytes < 0:
        raise ImproperlyConfigured("NEUTRINO_LOG_MAX_BYTES must be 0 (task logs off) or more")
    if conf.ledger_queue_size < 1:
        raise ImproperlyConfigured("NEUTRINO_LEDGER_QUEUE_SIZE must be at least 1")
    for name in ("ack_wait_s", "retry_backoff_s", "worker_grace_s", "heartbeat_s", "publish_timeout_s"):
        if getattr(conf, name) <= 0:
            raise ImproperlyConfigured(f"NEUTRINO_{name.upper()} must be positive")
    if conf.stream_replicas not in (1, 3, 5):
        raise ImproperlyConfigured("NEUTRINO_STREAM_REPLICAS must be 1, 3 or 5 (the NATS cluster's size)")
    if conf.max_deliver < 2:
        raise ImproperlyConfigured("NEUTRINO_MAX_DELIVER must be at least 2 so a crashed worker's task is retried")
    if not 0 <= conf.ws_port <= 65535:
        raise ImproperlyConfigured(f"NEUTRINO_WS_PORT must be a TCP port (or 0: none), not {conf.ws_port}")
    if conf.ws_url and not conf.ws_url.startswith(("ws://", "wss://", "/")):
        raise ImproperlyConfigured(
            f"NEUTRINO_WS_URL must start with ws://, wss:// or / (same host and port), not {conf.ws_url!r}"
        )
    if not (conf.rate_limit_per_s >= 0 and conf.rate_limit_burst >= 0):
        raise ImproperlyConfigured("NEUTRINO_RATE_LIMIT_PER_S and NEUTRINO_RATE_LIMIT_BURST must be 0 (off) or more")
    if conf.batch_max < 1:
        raise ImproperlyConfigured("NEUTRINO_BATCH_MAX must be at least 1")
    if conf.idempotency_ttl_s < 3600:
        raise ImproperlyConfigured("NEUTRINO_IDEMPOTENCY_TTL_S must be at least 3600 (an hour)")
    try:
        AllowList.parse(conf.webhook_allowed_hosts)
    except ValueError as exc:
        raise ImproperlyConfigured(str(exc))
    if conf.webhook_max_attempts < 1:
        raise ImproperlyConfigured("NEUTRINO_WEBHOOK_MAX_ATTEMPTS must be at least 1")
    for name in ("webhook_backoff_s", "webhook_timeout_s", "alerts_every_s", "webhooks_every_s"):
        if getattr(conf, name) <= 0:
            raise ImproperlyConfigured(f"NEUTRINO_{name.upper()} must be positive")
    _validate_retention(conf)
    if conf.asgi_fallback and ":" not in conf.asgi_fallback:
        raise ImproperlyConfigured(
            f"NEUTRINO_ASGI_FALLBACK must look like 'module:app', not {conf.asgi_fallback!r}"
        )


# The statuses retention deletes: tasks_app.models.FINISHED_STATUSES, named here because the core imports
# no model (a test holds the two equal).
RETAINED_STATUSES = ("completed", "failed", "cancelled", "expired")


def _validate_retention(conf: NeutrinoSettings) -> None:
    if conf.retention_days < 0:
        raise ImproperlyConfigured("NEUTRINO_RETENTION_DAYS must be 0 (keep forever) or more")
    for status, days in conf.retention_days_by_status:
        if status not in RETAINED_STATUSES:
            raise ImproperlyConfigured(
                f"NEUTRINO_RETENTION_DAYS_BY_STATUS names {status!r}: only finished statuses are deleted "
                f"({', '.join(RETAINED_STATUSES)})")
        if days < 0:
            raise ImproperlyConfigured(f"NEUTRINO_RETENTION_DAYS_{status.upper()} must be 0 (keep forever) or more")
    if conf.retention_every_s <= 0:
        raise ImproperlyConfigured("NEUTRINO_RETENTION_EVERY_S must be positive")


@receiver(setting_changed)
def _reread_on_change(*, setting: str, **kwargs: object) -> None:
    """`override_settings` (and pytest-django's `settings`) changed a NEUTRINO_* value: read them anew."""
    if setting.startswith("NEUTRINO_"):
        neutrino_settings.cache_clear()
