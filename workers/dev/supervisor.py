"""`neutrino dev`: the whole system on one machine, as child processes of one supervisor.

It starts nats-server (JetStream, store under ./data/nats, a user per role whose passwords it keeps
in ./data/nats-credentials.json), migrates the database,
creates the first admin account when there is none (its password is printed once),
starts the HTTP server (which brings the dashboard's websocket process along on
--ws-port) and the scheduler (`neutrino scheduler`: delayed tasks, schedules, expiry,
retention). Whatever it starts it restarts when it dies: nats-server first (same port, same store), the
HTTP server, the scheduler, and the workers (through the autoscaler). The NATS pools' workers follow the autoscaler
(`pools_app.autoscaler.local`): every couple of seconds it reads each pool's queue depth,
decides how many workers the pool wants (between its min and max replicas; a pool with
min 0, like gpu, has none until a task waits) and starts or stops (SIGTERM, graceful)
worker processes to match; pools an admin adds, changes, disables or deletes are
followed the same way. Ctrl-C stops the HTTP server and the workers (gracefully:
running tasks finish or go back to the stream), then nats-server.

The processes it starts sign with a key made once and kept in ./data/secret_key (0600) and answer
loopback host names only (localhost, 127.0.0.1, [::1]), whatever --host binds. ./data/ is 0700 and
the SQLite files 0600.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import stat
import sys
import threading
import time
from pathlib import Path

from django.conf import settings
from django.core.management import call_command

from pools_app.autoscaler.local import Child, LocalScaler, ScalerSettings
from pools_app.startup import check_tasks
from tasks_app.core.conf import neutrino_settings
from tasks_app.services.tasks import admin_ensure_first
from workers.engine.broker.bridge import NatsBridge
from workers.engine.nats_auth import GATEWAY_USER, WORKER_USER, load_or_create_credentials, server_config
from workers.engine.nats_server import NatsServer, NatsServerError, wait_for_port
from workers.engine.topology import ConsumerSettings

logger = logging.getLogger("neutrino.dev")

CHECK_EVERY_S = 2.0
RESTART_BACKOFF_S = 1.0
SECRET_KEY_FILE = "secret_key"


def _say(message: str) -> None:
    print(f"neutrino dev: {message}", file=sys.stderr, flush=True)


def dev_secret_key(data_dir: Path) -> str:
    """The key `neutrino dev` signs with: made once and kept in `<data>/secret_key` (0600), so sessions
    survive a restart. A DJANGO_SECRET_KEY in the environment takes its place."""
    path = data_dir / SECRET_KEY_FILE
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        path.chmod(0o600)
        key = path.read_text().strip()
        if key:
            return key
        raise SystemExit(f"neutrino dev: {path} is empty; delete it and a new key is made") from None
    key = secrets.token_urlsafe(50)
    with os.fdopen(fd, "w") as file:
        file.write(key + "\n")
    return key


def _tighten_data_dir(data_dir: Path) -> None:
    """0700, as settings creates it; one made by an older version may be 0755. A shared directory
    (sticky, like /tmp) or another user's is left alone."""
    info = data_dir.stat()
    if info.st_uid == os.getuid() and not info.st_mode & stat.S_ISVTX:
        data_dir.chmod(0o700)


def _tighten_sqlite_files() -> None:
    """The SQLite files 0600: settings creates a new database so, but one from an older version may be 0644."""
    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.sqlite3":
        return
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{database['NAME']}{suffix}")
        if path.exists():
            path.chmod(0o600)


def _restart_nats_if_dead(nats: NatsServer) -> None:
    """Start nats-server again, on the same port and store, when it has died: every process that talks to
    it reconnects on its own, and the file store keeps the stream's messages."""
    if nats.alive():
        return
    code = nats.process.returncode if nats.process is not None else None
    nats.restarts += 1
    _say(f"nats-server exited with {code}; restarting it on {nats.url} (restart #{nats.restarts})")
    try:
        nats.start()
    except NatsServerError as exc:  # the port is still held, say: try again on the next check
        _say(f"nats-server did not come back yet: {exc}")


def run_dev(*, host: str, port: int, nats_port: int, ws_port: int | None = None,
            allow_anonymous: bool = False) -> int:
    ws_port = port + 1 if ws_port is None else ws_port
    data_dir = Path(settings.DATA_DIR)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _tighten_data_dir(data_dir)
    secret_key = settings.SECRET_KEY if settings.SECRET_KEY != settings.DEV_SECRET_KEY else dev_secret_key(data_dir)
    call_command("migrate", interactive=False, verbosity=0)
    _tighten_sqlite_files()
    check_tasks()
    password = admin_ensure_first(username="admin")
    if password is not None:
        _say(f"created the dashboard account 'admin' with password {password}  (shown once: only its hash "
             "is stored; `neutrino createadmin` makes more)")

    # NATS refuses anonymous clients: each process gets its role's user (kept in ./data, mode 0600).
    credentials = load_or_create_credentials(data_dir)
    nats = NatsServer(store_dir=data_dir / "nats", port=nats_port, log_file=data_dir / "nats-server.log",
                      config=server_config(credentials))
    nats.start()
    gateway_url = credentials.url(nats.url, GATEWAY_USER)
    env = {**os.environ, "NEUTRINO_NATS_URL": gateway_url, "NEUTRINO_ALLOW_ANONYMOUS": "1" if allow_anonymous else "0",
           "DJANGO_SECRET_KEY": secret_key,
           # Whatever --host binds, the server answers loopback names only: a page of another site
           # cannot reach it through a DNS name rebound to 127.0.0.1.
           "DJANGO_ALLOWED_HOSTS": ",".join(settings.LOOPBACK_HOSTS)}
    worker_env = {**env, "NEUTRINO_NATS_URL": credentials.url(nats.url, WORKER_USER)}
    cli = [sys.executable, "-m", "neutrino_site.cli"]
    http = Child("http server", [*cli, "serve", "--mode", "http", "--host", host, "--port", str(port),
                                 "--ws-port", str(ws_port), "--workers", "1", "--threads", "16"])
    scheduler = Child("scheduler", [*cli, "scheduler"])
    conf = neutrino_settings()
    bridge = NatsBridge(gateway_url, name="neutrino-dev-autoscaler").start()
    scaler = LocalScaler(ScalerSettings(
        worker_argv=lambda pool: [*cli, "serve", "--mode", "nats", "--pool", pool],
        env=worker_env,
        grace_s=conf.worker_grace_s,
        consumer=ConsumerSettings(ack_wait_s=conf.ack_wait_s, max_deliver=conf.max_deliver),
        stream_replicas=conf.stream_replicas,
        say=_say,
    ), bridge)
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    http.start(env)
    scheduler.start(env)
    if wait_for_port(host if host != "0.0.0.0" else "127.0.0.1", port, 30):
        _say(f"serving http://{host}:{port}/  (dashboard websocket: port {ws_port}, API docs: /api/docs, "
             f"NATS: {nats.url}, data: {data_dir})")
        _say("API: anonymous calls allowed (loopback only; --require-token turns this off)" if allow_anonymous
             else "API: every call needs a token: `neutrino token create NAME`, then 'Authorization: Bearer <token>'")
    else:
        _say(f"the HTTP server did not open port {port} within 30 s; see its output above")
    try:
        while not stopping.is_set():
            # nats-server first: the HTTP server and the workers reconnect to it on their own.
            _restart_nats_if_dead(nats)
            try:
                scaler.step()
            except Exception:  # a database hiccup must not take the whole dev server down
                logger.exception("autoscaler step failed; trying again in %.0f s", CHECK_EVERY_S)
            for child in (http, scheduler):
                if not child.alive() and time.monotonic() - child.started_at > RESTART_BACKOFF_S:
                    code = child.process.returncode if child.process else None
                    child.restarts += 1
                    _say(f"{child.name} exited with {code}; restarting it (restart #{child.restarts})")
                    child.start(env)
            stopping.wait(CHECK_EVERY_S)
    finally:
        _say("stopping")
        http.terminate()
        scheduler.terminate()
        scaler.stop_all(settings.NEUTRINO_WORKER_GRACE_S + 5)
        http.stop(settings.NEUTRINO_WORKER_GRACE_S + 5)
        scheduler.stop(10)
        bridge.close(timeout_s=2.0)
        nats.stop()
        _say("stopped")
    return 0
