"""The client's timing options against the live stack (tests/neutrino/conftest.py): a delayed submit, run_now,
an expired task's wait, and the server's 422 for a time without an offset. The stack runs no scheduler
process: `neutrino scheduler --once` runs one round of its jobs where a test needs one."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from neutrino import AsyncNeutrinoClient, Conflict, TaskExpired, ValidationError

pytestmark = pytest.mark.timeout(180)


def test_submit_with_a_delay_is_scheduled_and_run_now_runs_it(neutrino_client) -> None:
    handle = neutrino_client.submit("cl_async_add", {"a": 2, "b": 3}, delay_s=3600, expires_s=7200)
    info = handle.info()
    assert handle.status() == "scheduled" and info.run_at and info.expires_at
    assert not info.finished
    now = handle.run_now()
    assert now.status in ("pending", "queued", "running", "completed")
    assert handle.wait(timeout=60) == 5
    with pytest.raises(Conflict, match="not scheduled"):
        handle.run_now()


def test_run_at_takes_an_aware_datetime_and_refuses_a_naive_one(neutrino_client) -> None:
    moment = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    handle = neutrino_client.submit("cl_async_add", {"a": 1, "b": 1}, run_at=moment)
    assert datetime.fromisoformat(handle.info().run_at or "") == moment
    handle.cancel()
    with pytest.raises(ValidationError) as caught:
        neutrino_client.submit("cl_async_add", {"a": 1, "b": 1}, run_at=datetime.now() + timedelta(hours=1))
    assert [f["field"] for f in caught.value.fields] == ["run_at"]
    with pytest.raises(ValidationError, match="make it async to delay it"):
        neutrino_client.submit("cl_add", {"a": 1, "b": 1}, delay_s=5)


def test_waiting_on_a_task_that_expired_raises_task_expired(neutrino_client, live_stack) -> None:
    handle = neutrino_client.submit("cl_async_add", {"a": 1, "b": 2}, delay_s=0.2, expires_s=0.4)
    assert handle.status() == "scheduled"
    time.sleep(0.5)  # past both times: the next round of the scheduler releases it, then it expires
    live_stack.cli("scheduler", "--once")
    with pytest.raises(TaskExpired, match="expired without running") as caught:
        handle.wait(timeout=30)
    assert caught.value.task_id == handle.id
    assert handle.info().status == "expired" and handle.info().started_at is None


def test_the_async_client_and_submit_many_take_the_same_options(live_stack) -> None:
    async def main() -> tuple[list[str], str]:
        async with AsyncNeutrinoClient(live_stack.url, token=live_stack.token) as client:
            handles = await client.submit_many("cl_async_add", [{"a": i, "b": 0} for i in range(3)], delay_s=3600)
            statuses = [await handle.status() for handle in handles]
            info = await handles[0].run_now()
            for handle in handles[1:]:
                await handle.cancel()
            return statuses, info.status

    statuses, released = asyncio.run(main())
    assert statuses == ["scheduled"] * 3 and released in ("pending", "queued", "running", "completed")
