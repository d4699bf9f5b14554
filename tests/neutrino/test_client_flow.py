"""The client's priority and uniqueness options against the live stack (tests/neutrino/conftest.py): the
server, a worker of the async pool and nats-server as real processes."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from neutrino import AsyncNeutrinoClient, ValidationError

pytestmark = pytest.mark.timeout(180)


def test_submit_takes_a_priority_and_a_unique_window(neutrino_client) -> None:
    high = neutrino_client.submit("cl_async_add", {"a": 2, "b": 3}, priority="high")
    assert high.info().priority == "high" and high.wait(timeout=60) == 5
    b = uuid.uuid4().int % 1_000_000  # a call no earlier run of this session made
    first = neutrino_client.submit("cl_async_add", {"a": 1, "b": b}, unique_for_s=60)
    assert first.wait(timeout=60) == 1 + b
    # A duplicate of a finished task: its handle still waits for (reads) that task's result.
    again = neutrino_client.submit("cl_async_add", {"a": 1, "b": b}, unique_for_s=60)
    assert (first.deduplicated, again.deduplicated, again.id) == (False, True, first.id)
    assert again.wait(timeout=60) == 1 + b
    with pytest.raises(ValidationError) as caught:
        neutrino_client.submit("cl_async_add", {"a": 1, "b": 1}, priority="urgent")
    assert [f["field"] for f in caught.value.fields] == ["priority"]


def test_the_async_client_and_submit_many_take_a_priority(live_stack) -> None:
    async def main() -> list[str]:
        async with AsyncNeutrinoClient(live_stack.url, token=live_stack.token) as client:
            handles = await client.submit_many("cl_async_add", [{"a": i, "b": 0} for i in range(3)], priority="low")
            handles.append(await client.submit("cl_async_add", {"a": 9, "b": 0}, priority="high"))
            for handle in handles:
                await handle.wait(timeout=60)
            return [(await handle.info()).priority for handle in handles]

    assert asyncio.run(main()) == ["low", "low", "low", "high"]
