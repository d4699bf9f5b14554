"""Schedules through both Python clients, against the live stack (HTTP server, worker, nats-server)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from neutrino import AsyncNeutrinoClient, NeutrinoClient, TaskNotFound, Unauthorized, ValidationError


@pytest.fixture(scope="module")
def admin_token(live_stack) -> str:
    return live_stack.cli("token", "create", "schedules-admin", "--admin").stdout.strip()


@pytest.fixture
def admin(live_stack, admin_token) -> Iterator[NeutrinoClient]:
    with NeutrinoClient(live_stack.url, token=admin_token, timeout=30.0) as client:
        yield client


def test_create_run_and_read_the_history_then_delete(admin) -> None:
    created = admin.create_schedule("cl-every-hour", "cl_async_add", cron="@hourly", args={"a": 2, "b": 3},
                                    timezone="Asia/Tokyo", missed="once", description="client test")
    assert created.cron == "0 * * * *" and created.timezone == "Asia/Tokyo" and created.enabled
    assert len(created.next_runs) == 5 and created.next_runs[0].endswith("+09:00")
    handle = admin.run_schedule("cl-every-hour")
    assert handle.wait(timeout=60) == 5
    fires = admin.schedule_fires("cl-every-hour")
    assert [(f.task_id, f.reason, f.task_status) for f in fires] == [(handle.id, "manual", "completed")]
    shown = admin.get_schedule("cl-every-hour")
    assert shown.last_fire is not None and shown.last_fire["status"] == "completed"
    assert [s.name for s in admin.list_schedules(task="cl_async_add")] == ["cl-every-hour"]
    admin.delete_schedule("cl-every-hour")
    with pytest.raises(TaskNotFound):
        admin.get_schedule("cl-every-hour")


def test_update_pause_resume_and_errors(admin) -> None:
    admin.create_schedule("cl-interval", "cl_async_add", interval_s=3600, args={"a": 1, "b": 1})
    try:
        assert admin.update_schedule("cl-interval", interval_s=60, missed="all").interval_s == 60
        paused = admin.pause_schedule("cl-interval")
        assert not paused.enabled and paused.next_run_at is None and paused.paused_by == "token:schedules-admin"
        assert admin.resume_schedule("cl-interval").enabled
        with pytest.raises(ValidationError) as caught:
            admin.update_schedule("cl-interval", cron="0 0 * *")
        assert caught.value.status_code == 422 and "5" in str(caught.value)
        with pytest.raises(ValidationError) as caught:
            admin.create_schedule("cl-sync", "cl_add", interval_s=60, args={"a": 1, "b": 1})
        assert "sync task" in str(caught.value)
    finally:
        admin.delete_schedule("cl-interval")


def test_a_token_that_is_not_an_admin_is_refused(neutrino_client) -> None:
    with pytest.raises(Unauthorized) as caught:
        neutrino_client.list_schedules()
    assert caught.value.status_code == 403 and "admin token" in str(caught.value)


def test_the_asyncio_client_has_the_same_operations(live_stack, admin_token) -> None:
    async def main() -> tuple[str, list[str]]:
        async with AsyncNeutrinoClient(live_stack.url, token=admin_token, timeout=30.0) as client:
            await client.create_schedule("cl-async", "cl_async_add", interval_s=3600, args={"a": 4, "b": 4})
            handle = await client.run_schedule("cl-async")
            result = await handle.wait(timeout=60)
            names = [s.name for s in await client.list_schedules()]
            await client.delete_schedule("cl-async")
            return result, names

    result, names = asyncio.run(main())
    assert result == 8 and "cl-async" in names
