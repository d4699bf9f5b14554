"""Django settings, 12-factor: every environment variable Neutrino reads is read here.

Neutrino's own settings are the NEUTRINO_* names; `tasks_app.core.conf.neutrino_settings()`
validates them once at start-up into one typed object.
"""

from __future__ import annotations

import os
import warnings
from datetime import timedelta
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def _private_file(path: str) -> str:
    """Create the SQLite file 0600 before Django connects (sqlite3 would create it 0644 under the usual
    umask); SQLite gives its -wal and -shm files the database file's mode. An existing file is left
    as it is (`neutrino dev` tightens its own). Returns `path`."""
    if path == ":memory:" or path.startswith("file:") or not Path(path).parent.is_dir():
        return path
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass
    return path


DATA_DIR = Path(os.environ.get("NEUTRINO_DATA_DIR", str(Path.cwd() / "data")))

DEBUG = _env_bool("DJANGO_DEBUG", False)
# The fallback key is public, so anything signed with it (sessions, messages, CSRF) can be forged:
# `neutrino serve`, the workers and `neutrino autoscale` refuse to start with it
# (neutrino_site.commands), and `neutrino dev` generates a key of its own (./data/secret_key). It is
# left only for commands that serve nothing (migrate, token, k8s render) and for tests.
DEV_SECRET_KEY = "neutrino-dev-insecure-change-me"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "").strip() or DEV_SECRET_KEY
# The host names the HTTP server answers. `neutrino serve` refuses to start unless they are given
# (NEUTRINO_ALLOWED_HOSTS_GIVEN); anything else (and `neutrino dev`) answers loopback names only.
LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
NEUTRINO_ALLOWED_HOSTS_GIVEN = _env_list("DJANGO_ALLOWED_HOSTS", [])
ALLOWED_HOSTS = NEUTRINO_ALLOWED_HOSTS_GIVEN or LOOPBACK_HOSTS
CSRF_TRUSTED_ORIGINS = _env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

# NEUTRINO_TLS=1: browsers reach this server over HTTPS only, through a TLS-terminating proxy (the
# manifests' Ingress) that sets X-Forwarded-Proto. Cookies are then sent over HTTPS only, HSTS pins
# the host to HTTPS, and plain-HTTP requests are redirected, except the probes and /metrics, which
# the kubelet and Prometheus send to the pod directly. Trust X-Forwarded-Proto only where nothing but
# the proxy can reach the server (the manifests' ClusterIP Service and NetworkPolicy).
NEUTRINO_TLS = _env_bool("NEUTRINO_TLS", False)
if NEUTRINO_TLS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^(healthz|readyz|metrics)$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("NEUTRINO_HSTS_SECONDS", str(365 * 24 * 3600)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("NEUTRINO_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = _env_bool("NEUTRINO_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        # Asking browsers to preload the domain binds every host of it for months: the domain's
        # owner decides (NEUTRINO_HSTS_PRELOAD=1), so `check --deploy` does not nag about it.
        SILENCED_SYSTEM_CHECKS = ["security.W021"]

INSTALLED_APPS = [
    # No autodiscover at start-up: workers, the scheduler and the CLI never serve the admin, and importing
    # every admin module (with the dashboard forms and httpx behind them) cost each of them 0.2 s.
    # neutrino_site.urls runs admin.autodiscover() where the admin is served.
    "django.contrib.admin.apps.SimpleAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # The sign-in throttle's failure counts, in the database (neutrino_site.auth).
    "axes",
    "ninja",
    "django_htmx",
    "tasks_app",
    "pools_app",
]

MIDDLEWARE = [
    # First, so it times the whole answer: neutrino_http_request_duration_seconds on /metrics.
    "neutrino_site.metrics.RequestLatencyMiddleware",
    # A trace per request, continuing the caller's traceparent; removes itself when tracing is off.
    "neutrino_site.tracing.TracingMiddleware",
    # A page that meets a database outage is a 503 to retry, not a 500 (the API has its own handler).
    "neutrino_site.outages.DatabaseOutageMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Serves /static/ itself (no DEBUG, no collectstatic needed: it uses the finders).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Hands every request this process's ports (NATS, publisher, events, ledger, sync pool) as request.ports.
    "neutrino_site.process.PortsMiddleware",
    # Every page but the login page needs a signed-in user; the JSON API, /static/ and /admin/ are
    # left to their own rules (neutrino_site.auth.DashboardLoginRequired).
    "neutrino_site.auth.DashboardLoginRequired",
    "django_htmx.middleware.HtmxMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a refused sign-in into the login page's 429 (neutrino_site.auth).
    "axes.middleware.AxesMiddleware",
]

# The throttle's check comes first, then Django's own users and passwords.
AUTHENTICATION_BACKENDS = [
    "neutrino_site.auth.LoginThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "neutrino_site.urls"
WSGI_APPLICATION = "neutrino_site.wsgi.application"
ASGI_APPLICATION = "neutrino_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "tasks_app.dashboard.context_processors.dashboard",
                "tasks_app.dashboard.context_processors.alert_banner",
            ],
        },
    },
]

_database_url = os.environ.get("DATABASE_URL", "").strip()
if _database_url:
    DATABASES = {"default": dj_database_url.parse(_database_url, conn_max_age=600, conn_health_checks=True)}
else:
    # Only this user reads the data directory (the database, the dev secret key, NATS' store).
    DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    # WAL lets the server and several workers write at once; IMMEDIATE transactions take the
    # write lock up front so two writers wait on the busy timeout instead of failing to upgrade.
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _private_file(os.environ.get("NEUTRINO_SQLITE_PATH", str(DATA_DIR / "neutrino.db"))),
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            "TEST": {"NAME": os.environ.get("NEUTRINO_TEST_SQLITE_PATH") or None},
            # Keep each request thread's connection: opening one (and its PRAGMAs) costs a request
            # that reads the database (a token check, a poll) about a millisecond.
            "CONN_MAX_AGE": 600,
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("NEUTRINO_STATIC_ROOT", str(BASE_DIR / "staticfiles")))
# WhiteNoise serves /static/ straight from the finders (static/ and the apps'), so no collectstatic
# is needed to run; STATIC_ROOT only exists after one (an image may run it), so its absence is fine.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)

# The dashboard's websocket is served by a small ASGI process beside the WSGI server (see
# neutrino_site.server). One in-memory channel layer per process is enough: each ASGI process
# subscribes to the task events on NATS itself and fans them out to its own browsers.
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

# Sign-in throttle (django-axes, counts in the database so every server process shares them): after
# NEUTRINO_LOGIN_FAILURE_LIMIT failed sign-ins for one username, or from one address, that username or
# address is refused until NEUTRINO_LOGIN_LOCKOUT_S pass without another failure. NEUTRINO_CLIENT_IP_HEADER
# names the header a proxy in front sets to the client's address (its last entry is used).
NEUTRINO_CLIENT_IP_HEADER = os.environ.get("NEUTRINO_CLIENT_IP_HEADER", "")
AXES_FAILURE_LIMIT = int(os.environ.get("NEUTRINO_LOGIN_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = timedelta(seconds=float(os.environ.get("NEUTRINO_LOGIN_LOCKOUT_S", "900")))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = False  # neutrino_site.auth.ThrottledLoginView forgets only this user's failures from here
AXES_CLIENT_IP_CALLABLE = "neutrino_site.auth.login_client_address"
AXES_LOCKOUT_CALLABLE = "neutrino_site.auth.login_locked_response"
AXES_DISABLE_ACCESS_LOG = True  # keep the failure counts only, not a row per successful sign-in

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "neutrino": {"handlers": ["console"], "level": os.environ.get("NEUTRINO_LOG_LEVEL", "INFO")},
        "django": {"handlers": ["console"], "level": "WARNING"},
    },
}

# --- Neutrino (validated by tasks_app.core.conf) ---------------------------------------------------
NEUTRINO_TASK_MODULES = _env_list("NEUTRINO_TASK_MODULES", ["examples.tasks"])
NEUTRINO_SYNC_PROCESSES = int(os.environ.get("NEUTRINO_SYNC_PROCESSES", "0")) or (os.cpu_count() or 2)
NEUTRINO_MAX_TASKS_PER_CHILD = int(os.environ.get("NEUTRINO_MAX_TASKS_PER_CHILD", "1000"))
NEUTRINO_START_METHOD = os.environ.get("NEUTRINO_START_METHOD", "forkserver")
NEUTRINO_MAX_PAYLOAD_BYTES = int(os.environ.get("NEUTRINO_MAX_PAYLOAD_BYTES", str(1_000_000)))
# A queued task's result over this goes to the JetStream object store (the row holds a reference), up to
# NEUTRINO_MAX_OBJECT_BYTES; bytes and neutrino.File results always do.
NEUTRINO_INLINE_RESULT_BYTES = int(os.environ.get("NEUTRINO_INLINE_RESULT_BYTES", str(256 * 1024)))
NEUTRINO_MAX_OBJECT_BYTES = int(os.environ.get("NEUTRINO_MAX_OBJECT_BYTES", str(1 << 30)))
# What one attempt of a task may write to its log (print, logging, ...); the rest is counted, not kept. 0: off.
NEUTRINO_LOG_MAX_BYTES = int(os.environ.get("NEUTRINO_LOG_MAX_BYTES", str(1_000_000)))
NEUTRINO_LEDGER = _env_bool("NEUTRINO_LEDGER", True)
# Traces (OpenTelemetry, workers.engine.tracing): off unless NEUTRINO_TRACING says so or the standard OTEL_*
# variables name an exporter or an OTLP endpoint. The exporter itself reads the other OTEL_* variables.
_OTEL_EXPORTER = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
NEUTRINO_TRACING = _env_bool("NEUTRINO_TRACING", (_OTEL_EXPORTER not in ("", "none")) or bool(
    os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")))
NEUTRINO_TRACE_EXPORTER = _OTEL_EXPORTER if _OTEL_EXPORTER not in ("", "none") else "otlp"
# The dashboard's task page links its trace here, e.g. "https://jaeger.example/trace/{trace_id}"; "": no link.
NEUTRINO_TRACE_URL_TEMPLATE = os.environ.get("NEUTRINO_TRACE_URL_TEMPLATE", "")
NEUTRINO_LEDGER_QUEUE_SIZE = int(os.environ.get("NEUTRINO_LEDGER_QUEUE_SIZE", "10000"))
NEUTRINO_NATS_URL = os.environ.get("NEUTRINO_NATS_URL", "")
# Queued tasks (JetStream and the workers).
NEUTRINO_ACK_WAIT_S = float(os.environ.get("NEUTRINO_ACK_WAIT_S", "30"))
NEUTRINO_MAX_DELIVER = int(os.environ.get("NEUTRINO_MAX_DELIVER", "10"))
NEUTRINO_RETRY_BACKOFF_S = float(os.environ.get("NEUTRINO_RETRY_BACKOFF_S", "1.0"))
NEUTRINO_RETRY_BACKOFF_MAX_S = float(os.environ.get("NEUTRINO_RETRY_BACKOFF_MAX_S", "300"))
NEUTRINO_WORKER_GRACE_S = float(os.environ.get("NEUTRINO_WORKER_GRACE_S", "30"))
NEUTRINO_HEARTBEAT_S = float(os.environ.get("NEUTRINO_HEARTBEAT_S", "5"))
NEUTRINO_SWEEP_AFTER_S = float(os.environ.get("NEUTRINO_SWEEP_AFTER_S", "10"))
NEUTRINO_STREAM_REPLICAS = int(os.environ.get("NEUTRINO_STREAM_REPLICAS", "1"))
NEUTRINO_PUBLISH_TIMEOUT_S = float(os.environ.get("NEUTRINO_PUBLISH_TIMEOUT_S", "5"))
NEUTRINO_ASGI_FALLBACK = os.environ.get("NEUTRINO_ASGI_FALLBACK", "")
NEUTRINO_SYNC_UPSTREAM = os.environ.get("NEUTRINO_SYNC_UPSTREAM", "")
# The dashboard's websocket: the port of the ASGI process `neutrino serve` starts beside the HTTP
# server (same host as the page), or a full URL when a proxy serves it elsewhere
# (e.g. wss://neutrino.example.com/ws/dashboard/). 0 and no URL: the pages are not live.
NEUTRINO_WS_PORT = int(os.environ.get("NEUTRINO_WS_PORT", "0") or 0)
NEUTRINO_WS_URL = os.environ.get("NEUTRINO_WS_URL", "")
# How often an open dashboard socket re-checks its session (logout, deactivation) in seconds.
NEUTRINO_WS_SESSION_CHECK_S = float(os.environ.get("NEUTRINO_WS_SESSION_CHECK_S", "30"))
# Kubernetes (`neutrino k8s render`, `neutrino up`, the autoscaler): the image the manifests run
# (empty: the manifests' own `neutrino:<version>`), and an API server URL that replaces the
# in-cluster / kubeconfig configuration (tests point it at a fake API server).
NEUTRINO_IMAGE = os.environ.get("NEUTRINO_IMAGE", "")
NEUTRINO_KUBE_URL = os.environ.get("NEUTRINO_KUBE_URL", "")
# `neutrino autoscale`: the namespace of the pool Deployments it scales (its own, in the manifests).
NEUTRINO_KUBE_NAMESPACE = os.environ.get("NEUTRINO_KUBE_NAMESPACE", "")
# The images a pool may run (dashboard, admin): comma-separated prefixes, each matched up to a "/", ":"
# or "@" (so "registry.example.com" accepts registry.example.com/team/x:1, not registry.example.com.evil.io/x).
# Empty: any tag of Neutrino's own image (`neutrino:`) and of NEUTRINO_IMAGE's repository.
NEUTRINO_IMAGE_REGISTRIES = _env_list("NEUTRINO_IMAGE_REGISTRIES", [])

# The API's front door (tasks_app.api.auth): bearer tokens (`neutrino token create NAME`), anonymous calls
# (refused unless allowed, and then taken from loopback addresses only: `neutrino dev` allows them), a
# per-caller rate limit in requests/s per server process (0: off; burst 0: one second's worth), the bulk
# submit's maximum and how long an Idempotency-Key returns the same task.
NEUTRINO_ALLOW_ANONYMOUS = _env_bool("NEUTRINO_ALLOW_ANONYMOUS", False)
NEUTRINO_RATE_LIMIT_PER_S = float(os.environ.get("NEUTRINO_RATE_LIMIT_PER_S", "0") or 0)
NEUTRINO_RATE_LIMIT_BURST = int(os.environ.get("NEUTRINO_RATE_LIMIT_BURST", "0") or 0)
NEUTRINO_BATCH_MAX = int(os.environ.get("NEUTRINO_BATCH_MAX", "1000") or 1000)
NEUTRINO_IDEMPOTENCY_TTL_S = float(os.environ.get("NEUTRINO_IDEMPOTENCY_TTL_S", str(24 * 3600)))
# Browsers may call the API only from the server's own origin (scheme://Host, as Django's CSRF check
# sees it) and these exact origins, e.g. https://neutrino.example.com behind a proxy that rewrites
# Host (tasks_app.api.browsers).
NEUTRINO_ALLOWED_ORIGINS = _env_list("NEUTRINO_ALLOWED_ORIGINS", [])

# The HTTP server's front door (neutrino_site.http_worker): a request's head, then its body, must arrive
# within these seconds of starting, or the connection ends (408); no request thread waits meanwhile.
NEUTRINO_HTTP_HEADER_TIMEOUT_S = float(os.environ.get("NEUTRINO_HTTP_HEADER_TIMEOUT_S", "10") or 10)
NEUTRINO_HTTP_BODY_TIMEOUT_S = float(os.environ.get("NEUTRINO_HTTP_BODY_TIMEOUT_S", "30") or 30)

# Long-polls (`GET /tasks/<id>?wait=N`) waiting at once per server process, and per caller: each holds a
# request thread (of --threads, 32 by default); a wait beyond a cap is answered at once, not granted.
NEUTRINO_LONG_POLL_MAX = int(os.environ.get("NEUTRINO_LONG_POLL_MAX", "8") or 8)
NEUTRINO_LONG_POLL_PER_CALLER = int(os.environ.get("NEUTRINO_LONG_POLL_PER_CALLER", "2") or 2)

# Alerts and callbacks (tasks_app.services.alerts, .webhooks): the hosts webhooks may be sent to, as
# comma-separated entries: `*` any host whose addresses are all public, a host name (`.example.com`: it and
# its subdomains), an IP address or a network (10.0.0.0/8). A listed name, address or network may be
# internal (loopback, private, link-local); nothing else internal is ever called. The secret that signs
# task callbacks (empty: one derived from DJANGO_SECRET_KEY, shown on the Alerts page), how many times a
# webhook is tried, the first retry's delay (doubling after each failure), a request's timeout, and how
# often the scheduler evaluates alert rules and sends due webhooks.
NEUTRINO_WEBHOOK_ALLOWED_HOSTS = _env_list("NEUTRINO_WEBHOOK_ALLOWED_HOSTS", ["*"])
NEUTRINO_CALLBACK_SECRET = os.environ.get("NEUTRINO_CALLBACK_SECRET", "")
NEUTRINO_WEBHOOK_MAX_ATTEMPTS = int(os.environ.get("NEUTRINO_WEBHOOK_MAX_ATTEMPTS", "8") or 8)
NEUTRINO_WEBHOOK_BACKOFF_S = float(os.environ.get("NEUTRINO_WEBHOOK_BACKOFF_S", "10") or 10)
NEUTRINO_WEBHOOK_TIMEOUT_S = float(os.environ.get("NEUTRINO_WEBHOOK_TIMEOUT_S", "10") or 10)
NEUTRINO_ALERTS_EVERY_S = float(os.environ.get("NEUTRINO_ALERTS_EVERY_S", "10") or 10)
NEUTRINO_WEBHOOKS_EVERY_S = float(os.environ.get("NEUTRINO_WEBHOOKS_EVERY_S", "1") or 1)

# Retention of history (tasks_app.services.retention, run by `neutrino scheduler`): finished tasks
# (completed, failed, cancelled, expired) older than NEUTRINO_RETENTION_DAYS days, by created_at, are
# deleted (0: kept forever); NEUTRINO_RETENTION_DAYS_<STATUS> overrides it for one status, e.g.
# NEUTRINO_RETENTION_DAYS_FAILED=90. The scheduler prunes every NEUTRINO_RETENTION_EVERY_S seconds.
NEUTRINO_RETENTION_DAYS = int(os.environ.get("NEUTRINO_RETENTION_DAYS", "").strip() or "30")
NEUTRINO_RETENTION_DAYS_BY_STATUS = {
    status: int(days)
    for status in ("completed", "failed", "cancelled", "expired")  # tasks_app.core.conf.RETAINED_STATUSES
    if (days := os.environ.get(f"NEUTRINO_RETENTION_DAYS_{status.upper()}", "").strip())
}
NEUTRINO_RETENTION_EVERY_S = float(os.environ.get("NEUTRINO_RETENTION_EVERY_S", "").strip() or "60")

# The gateway refuses bodies over the payload limit itself (413, before parsing); Django's own
# limit sits just above it so it never answers first with a less helpful error.
DATA_UPLOAD_MAX_MEMORY_SIZE = NEUTRINO_MAX_PAYLOAD_BYTES + 64 * 1024
