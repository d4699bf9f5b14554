"""The dashboard's websocket: real task events on a real nats-server, relayed in batches as htmx OOB swaps."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import nats
import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from tasks_app.dashboard import live
from tasks_app.dashboard.consumers import TaskEventsConsumer
from tasks_app.models import Task
from tests.dashboard.conftest import XSS_IMG, XSS_SCRIPT
from workers.engine.topology import event_subject

pytestmark = pytest.mark.django_db(transaction=True)

RECEIVE_S = 10


def consumer_for(user: Any, path: str, cookies: dict[str, str] | None = None) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(TaskEventsConsumer.as_asgi(), path)
    communicator.scope["user"] = user
    communicator.scope["cookies"] = cookies or {}
    return communicator


async def publish(url: str, events: list[dict[str, Any]]) -> None:
    nc = await nats.connect(url)
    try:
        for event in events:
            await nc.publish(event_subject(event["task_id"]), json.dumps(event).encode())
        await nc.flush()
    finally:
        await nc.close()


async def wait_subscribed() -> None:
    """The relay connects in the background; wait (bounded) until it listens before publishing."""
    for _ in range(200):
        if live._relay is not None and live._relay.connected:
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the live relay did not subscribe to NATS within 5 s")


async def receive_until(communicator: WebsocketCommunicator, predicate: Any) -> list[str]:
    """Every payload up to and including the first one `predicate` accepts."""
    payloads = []
    while True:
        payload = await communicator.receive_from(timeout=RECEIVE_S)
        payloads.append(payload)
        if predicate(payload):
            return payloads


def counter_value(payload: str, status: str) -> str:
    match = re.search(rf'data-status="{status}"><span class="counter-label">{status}</span>\s*'
                      rf'<span class="counter-value">([^<]+)</span>', payload)
    assert match, f"no {status} counter in the payload"
    return match.group(1)


def test_a_burst_of_events_reaches_the_list_as_few_batched_payloads(live_settings, staff_user, make_task) -> None:
    first = make_task(function_name="alpha")

    async def scenario() -> None:
        communicator = consumer_for(staff_user, "/ws/dashboard/?view=list")
        connected, _ = await communicator.connect()
        assert connected
        try:
            initial = await communicator.receive_from(timeout=RECEIVE_S)
            # On connect: the current state, as out-of-band swaps of the counters, the table and the pager.
            for element in ("task-counters", "task-table", "task-pager"):
                assert re.search(rf'id="{element}"[^>]*hx-swap-oob="true"', initial), element
            assert f'id="task-{first.id}"' in initial and counter_value(initial, "completed") == "1"
            await wait_subscribed()

            burst = await database_sync_to_async(lambda: [make_task(function_name="burst") for _ in range(60)])()
            await publish(live_settings.url, [{"task_id": str(t.id), "status": "completed"} for t in burst])
            payloads = await receive_until(communicator, lambda p: all(str(t.id) in p for t in burst[-50:]))
            assert len(payloads) < len(burst) / 4, "events are batched, not sent one by one"
            last = payloads[-1]
            assert counter_value(last, "completed") == "61"  # read from the database, not counted up
            assert len(re.findall(r'<tr id="task-', last)) == 50  # one page, newest first
            assert re.search(rf'id="task-{burst[-1].id}" class="status-completed changed"', last)
        finally:
            await communicator.disconnect()
            await live.stop_relay()

    async_to_sync(scenario)()


def test_the_list_socket_keeps_to_its_filters(live_settings, staff_user, make_task) -> None:
    async def scenario() -> None:
        communicator = consumer_for(staff_user, "/ws/dashboard/?view=list&function=wanted")
        connected, _ = await communicator.connect()
        assert connected
        try:
            await communicator.receive_from(timeout=RECEIVE_S)
            await wait_subscribed()
            other = await database_sync_to_async(make_task)(function_name="other")
            await publish(live_settings.url, [{"task_id": str(other.id), "status": "completed"}])
            assert await communicator.receive_nothing(timeout=1.0), "a task the filter hides sends nothing"
            wanted = await database_sync_to_async(make_task)(function_name="wanted", status="running")
            await publish(live_settings.url, [{"task_id": str(wanted.id), "status": "running"}])
            payload = await communicator.receive_from(timeout=RECEIVE_S)
            assert str(wanted.id) in payload and str(other.id) not in payload
        finally:
            await communicator.disconnect()
            await live.stop_relay()

    async_to_sync(scenario)()


def test_the_detail_socket_follows_its_task_and_new_retries(live_settings, staff_user, make_task) -> None:
    task = make_task(function_name="slow", status="queued", pool="async", execution_mode="async")

    async def scenario() -> None:
        communicator = consumer_for(staff_user, f"/ws/dashboard/?view=task&id={task.id}",
                                    cookies={"csrftoken": "a" * 32})
        connected, _ = await communicator.connect()
        assert connected
        try:
            initial = await communicator.receive_from(timeout=RECEIVE_S)
            assert re.search(r'id="task-live"[^>]*hx-swap-oob="true"', initial)
            assert 'id="cancel-button"' in initial and 'name="csrfmiddlewaretoken"' in initial
            await wait_subscribed()

            def run() -> None:
                Task.objects.filter(id=task.id).update(status="running", progress=0.4,
                                                       progress_message="step 2 of 5", worker_id="box:7")

            await database_sync_to_async(run)()
            await publish(live_settings.url, [{"task_id": str(task.id), "status": "running", "progress": 0.4}])
            payload = await communicator.receive_from(timeout=RECEIVE_S)
            assert 'aria-valuenow="40"' in payload and "step 2 of 5" in payload and "box:7" in payload

            retry = await database_sync_to_async(make_task)(function_name="slow", status="queued", retry_of=task,
                                                            pool="async", execution_mode="async")
            await publish(live_settings.url, [{"task_id": str(retry.id), "status": "queued"}])
            payload = await communicator.receive_from(timeout=RECEIVE_S)
            assert "retried as" in payload and str(retry.id)[:8] in payload
        finally:
            await communicator.disconnect()
            await live.stop_relay()

    async_to_sync(scenario)()


def test_live_payloads_escape_task_strings(live_settings, staff_user, make_task) -> None:
    task = make_task(function_name=XSS_SCRIPT, worker_id=XSS_IMG, status="running", progress=0.5,
                     progress_message=XSS_IMG, error=XSS_SCRIPT)

    async def scenario() -> None:
        for path in ("/ws/dashboard/?view=list", f"/ws/dashboard/?view=task&id={task.id}"):
            communicator = consumer_for(staff_user, path)
            connected, _ = await communicator.connect()
            assert connected
            payload = await communicator.receive_from(timeout=RECEIVE_S)
            await communicator.disconnect()
            assert "<script>alert" not in payload and "<img src=x" not in payload
            assert "&lt;script&gt;" in payload
        await live.stop_relay()

    async_to_sync(scenario)()


def test_sockets_need_a_signed_in_user_from_the_same_host(live_settings, staff_user, client) -> None:
    from neutrino_site.asgi import application

    client.force_login(staff_user)
    session = client.cookies["sessionid"].value

    async def attempt(headers: list[tuple[bytes, bytes]], path: str = "/ws/dashboard/?view=list") -> bool:
        communicator = WebsocketCommunicator(application, path, headers=headers)
        connected, _ = await communicator.connect(timeout=RECEIVE_S)
        await communicator.disconnect()
        return connected

    async def scenario() -> None:
        host = (b"host", b"testserver:8101")
        page = (b"origin", b"http://testserver:8100")
        cookie = (b"cookie", f"sessionid={session}".encode())
        assert not await attempt([host, page]), "no session: refused"
        assert await attempt([host, page, cookie])
        assert not await attempt([host, (b"origin", b"http://evil.example"), cookie]), "another site: refused"
        assert not await attempt([host, page, cookie], path="/ws/dashboard/?view=nothing")
        await live.stop_relay()

    async_to_sync(scenario)()


def test_the_relay_sends_one_group_message_per_batch() -> None:
    """Deterministic: events that arrive before the batch's timer fires go out as one message."""

    class Layer:
        def __init__(self) -> None:
            self.sent: list[dict[str, Any]] = []

        async def group_send(self, group: str, message: dict[str, Any]) -> None:
            self.sent.append(message)

    class Msg:
        def __init__(self, data: bytes) -> None:
            self.data = data

    async def scenario() -> list[dict[str, Any]]:
        layer = Layer()
        relay = live.EventRelay("nats://unused", layer, batch_s=0.05)  # type: ignore[arg-type]
        for i in range(500):
            await relay._on_message(Msg(json.dumps({"task_id": f"t{i % 200}", "status": "running"}).encode()))
        await relay._on_message(Msg(b"not json"))
        while relay._flush_task is not None:
            await asyncio.sleep(0.01)
        for i in range(live.BATCH_MAX_IDS + 5):
            await relay._on_message(Msg(json.dumps({"task_id": f"u{i}"}).encode()))
        while relay._flush_task is not None:
            await asyncio.sleep(0.01)
        return layer.sent

    sent = asyncio.run(scenario())
    assert len(sent) == 2
    assert sent[0]["type"] == "tasks.changed" and len(sent[0]["task_ids"]) == 200
    assert sent[1]["task_ids"] is None  # more than a batch lists: "re-render everything"
