"""The Python client against a live server and worker (tests/neutrino/conftest.py): every call, every error.

No mocks: the server, the worker, nats-server and the database are real processes. The one stand-in
is a transport that loses the first answer of a submit, to show that the client's retry of it makes
no second task.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import pytest

from neutrino import (
    AsyncNeutrinoClient,
    AsyncTask,
    Conflict,
    GatewayUnavailable,
    NeutrinoClient,
    NeutrinoClientError,
    Overloaded,
    TaskCancelled,
    TaskFailed,
    TaskNotFound,
    TaskTimeout,
    Unauthorized,
    ValidationError,
)

pytestmark = pytest.mark.timeout(180)

T = TypeVar("T")


def eventually(probe: Callable[[], T], what: str, timeout_s: float = 30.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def tasks_with(client: NeutrinoClient, function: str, **args: Any) -> list[str]:
    """Ids of the tasks of `function` whose args include `args`."""
    return [t.id for t in client.iter_tasks(function=function, fields=("args",))
            if isinstance(t.args, dict) and all(t.args.get(k) == v for k, v in args.items())]


# --- sync calls ------------------------------------------------------------------------------------


def test_call_sync_returns_the_result(neutrino_client) -> None:
    assert neutrino_client.call_sync("cl_add", a=1, b=2) == 3


def test_call_sync_of_a_queued_task_waits_for_it(neutrino_client) -> None:
    assert neutrino_client.call_sync("cl_async_add", a=20, b=22) == 42


def test_bad_arguments_raise_validation_error_naming_the_call_and_field(neutrino_client) -> None:
    with pytest.raises(ValidationError) as caught:
        neutrino_client.call_sync("cl_add", a="x", b=2)
    error = caught.value
    assert error.status_code == 422 and [f["field"] for f in error.fields] == ["a"]
    assert "call_sync(cl_add(a='x', b=2))" in str(error) and "invalid arguments for cl_add" in str(error)


def test_unknown_task_raises_task_not_found(neutrino_client) -> None:
    with pytest.raises(TaskNotFound, match="no task named 'cl_nope'"):
        neutrino_client.call_sync("cl_nope")


def test_a_task_that_raises_is_task_failed_with_its_id_and_traceback(neutrino_client) -> None:
    with pytest.raises(TaskFailed) as caught:
        neutrino_client.call_sync("cl_boom", message="kaput")
    error = caught.value
    assert error.status_code == 500 and error.error_type == "ValueError" and "kaput" in str(error)
    assert error.traceback and "cl_boom" in error.traceback
    assert neutrino_client.get_task(error.task_id).status == "failed"


def test_a_sync_task_past_its_timeout_is_task_timeout(neutrino_client) -> None:
    with pytest.raises(TaskTimeout) as caught:
        neutrino_client.call_sync("cl_slow", seconds=5)
    assert caught.value.status_code == 504 and caught.value.task_id and "300 ms" in str(caught.value)
    assert not caught.value.still_running


# --- queued tasks ----------------------------------------------------------------------------------


def test_call_async_then_wait(neutrino_client) -> None:
    handle = neutrino_client.call_async("cl_async_add", a=2, b=3)
    assert isinstance(handle, AsyncTask) and uuid.UUID(handle.id)
    assert handle.status() in {"pending", "queued", "running", "completed"}
    assert handle.wait(timeout=60) == 5
    info = handle.info()
    assert info.status == "completed" and info.result == 5 and info.function_name == "cl_async_add"


def test_call_async_of_a_sync_task_is_already_done(neutrino_client) -> None:
    handle = neutrino_client.call_async("cl_add", a=4, b=4)
    assert handle.wait() == 8


def test_wait_raises_task_failed(neutrino_client) -> None:
    handle = neutrino_client.call_async("cl_async_fail", message="no dice")
    with pytest.raises(TaskFailed) as caught:
        handle.wait(timeout=60)
    error = caught.value
    assert error.task_id == handle.id and error.error_type == "RuntimeError" and "no dice" in str(error)
    assert f"wait('{handle.id}')" in str(error)


def test_wait_that_runs_out_is_task_timeout_and_the_task_goes_on(neutrino_client) -> None:
    handle = neutrino_client.call_async("cl_async_sleep", seconds=60)
    with pytest.raises(TaskTimeout) as caught:
        handle.wait(timeout=0.5)
    assert caught.value.still_running and caught.value.task_id == handle.id
    assert handle.status() in {"pending", "queued", "running"}
    handle.cancel()


def test_cancel_a_running_task(neutrino_client) -> None:
    handle = neutrino_client.call_async("cl_async_sleep", seconds=60)
    eventually(lambda: handle.status() == "running", "the task to start")
    assert handle.cancel().status == "cancelled"
    with pytest.raises(TaskCancelled):
        handle.wait(timeout=30)
    assert handle.cancel().status == "cancelled", "cancelling twice is not an error"
    done = neutrino_client.call_async("cl_async_add", a=1, b=1)
    done.wait(timeout=60)
    with pytest.raises(Conflict, match="already finished"):
        done.cancel()


def test_retry_makes_a_new_task_with_the_same_arguments(neutrino_client) -> None:
    failed = neutrino_client.call_async("cl_async_fail", message="again")
    with pytest.raises(TaskFailed):
        failed.wait(timeout=60)
    retried = failed.retry()
    assert retried.id != failed.id
    with pytest.raises(TaskFailed, match="again"):
        retried.wait(timeout=60)
    assert retried.info().retry_of == failed.id
    ok = neutrino_client.call_async("cl_async_add", a=5, b=5)
    assert ok.retry().wait(timeout=60) == 10


def test_retry_with_changes_runs_the_new_arguments_and_records_them(neutrino_client) -> None:
    original = neutrino_client.call_async("cl_async_add", a=1, b=2)
    assert original.wait(timeout=60) == 3
    changed = neutrino_client.retry(original.id, args={"a": 40, "b": 2}, timeout_ms=9_000)
    assert changed.wait(timeout=60) == 42
    info = changed.info()
    assert info.retry_of == original.id and info.timeout_ms == 9_000
    assert info.retry_changes == {"args": {"before": {"a": 1, "b": 2}, "after": {"a": 40, "b": 2}},
                                  "timeout_ms": {"before": original.info().timeout_ms, "after": 9_000}}
    with pytest.raises(ValidationError, match="a:"):
        neutrino_client.retry(original.id, args={"a": "x", "b": 2})


def test_submit_many_answers_in_order(neutrino_client) -> None:
    base = uuid.uuid4().int % 10**9
    handles = neutrino_client.submit_many("cl_noop", [{"n": base + i} for i in range(30)])
    assert len(handles) == 30 and len({h.id for h in handles}) == 30
    assert [h.wait(timeout=60) for h in handles] == [base + i for i in range(30)]


def test_submit_many_is_all_or_nothing(neutrino_client) -> None:
    marker = uuid.uuid4().int % 10**9
    items: list[dict[str, Any]] = [{"n": marker}, {"n": marker}, {"n": "not a number"}, {"n": marker}]
    with pytest.raises(ValidationError) as caught:
        neutrino_client.submit_many("cl_noop", items)
    assert "item 2" in str(caught.value) and caught.value.body["index"] == 2
    assert tasks_with(neutrino_client, "cl_noop", n=marker) == [], "no item was submitted"


def test_submit_many_in_chunks(neutrino_client) -> None:
    base = uuid.uuid4().int % 10**9
    handles = neutrino_client.submit_many("cl_noop", [{"n": base + i} for i in range(7)], chunk_size=3)
    assert [h.wait(timeout=60) for h in handles] == [base + i for i in range(7)]


def test_submit_many_in_chunks_reports_what_earlier_chunks_queued(neutrino_client) -> None:
    base = uuid.uuid4().int % 10**9
    items: list[dict[str, Any]] = [{"n": base}, {"n": base + 1}, {"n": base + 2}, {"n": "bad"}]
    with pytest.raises(ValidationError) as caught:
        neutrino_client.submit_many("cl_noop", items, chunk_size=2)
    queued = caught.value.submitted
    assert [type(h) for h in queued] == [AsyncTask, AsyncTask]
    assert [h.wait(timeout=60) for h in queued] == [base, base + 1]
    assert tasks_with(neutrino_client, "cl_noop", n=base + 2) == [], "the failed chunk queued nothing"


def test_get_and_list_tasks(neutrino_client) -> None:
    failed = neutrino_client.call_async("cl_async_fail", message="listed")
    with pytest.raises(TaskFailed):
        failed.wait(timeout=60)
    page = neutrino_client.list_tasks(status="failed", function="cl_async_fail", limit=500)
    assert failed.id in [t.id for t in page.items] and all(t.status == "failed" for t in page.items)
    first = neutrino_client.list_tasks(limit=1)
    assert len(first.items) == 1 and first.next_cursor
    second = neutrino_client.list_tasks(limit=1, cursor=first.next_cursor)
    assert second.items[0].id != first.items[0].id
    with pytest.raises(TaskNotFound):
        neutrino_client.get_task(str(uuid.uuid4()))
    with pytest.raises(TaskNotFound, match="UUID"):
        neutrino_client.get_task("not-an-id")
    with pytest.raises(ValidationError):
        neutrino_client.list_tasks(status="exploded")


def test_list_items_carry_args_and_result_only_when_asked(neutrino_client) -> None:
    a = uuid.uuid4().int % 10**9
    assert neutrino_client.call_sync("cl_add", a=a, b=2) == a + 2
    (task_id,) = eventually(lambda: tasks_with(neutrino_client, "cl_add", a=a), "the row in the ledger")
    plain = neutrino_client.list_tasks(function="cl_add", limit=500)
    assert 0 < len(plain.items) <= 100 and task_id in [t.id for t in plain.items]
    assert all(t.args is None and t.result is None and "result" not in t.raw for t in plain.items)
    full = neutrino_client.list_tasks(function="cl_add", limit=100, fields=("args", "result", "traceback"))
    (mine,) = [t for t in full.items if t.id == task_id]
    assert (mine.args, mine.result) == ({"a": a, "b": 2}, a + 2)
    with pytest.raises(ValidationError, match="'secret'"):
        neutrino_client.list_tasks(fields=("secret",))


# --- idempotency -----------------------------------------------------------------------------------


def test_the_same_idempotency_key_makes_one_task(neutrino_client) -> None:
    marker = uuid.uuid4().int % 10**9
    key = str(uuid.uuid4())
    first = neutrino_client.submit("cl_noop", {"n": marker}, idempotency_key=key)
    again = neutrino_client.submit("cl_noop", {"n": marker}, idempotency_key=key)
    assert again.id == first.id and first.wait(timeout=60) == marker
    assert tasks_with(neutrino_client, "cl_noop", n=marker) == [first.id]
    with pytest.raises(Conflict, match="different call"):
        neutrino_client.submit("cl_noop", {"n": marker + 1}, idempotency_key=key)


class LoseFirstAnswer(httpx.BaseTransport):
    """Delivers each request to the server, but drops the first answer to a POST, as a broken connection does."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.posts = 0
        self.keys: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST":
            self.posts += 1
            self.keys.append(request.headers.get("Idempotency-Key"))
            if self.posts == 1:
                response.read()
                response.close()
                raise httpx.ReadError("connection reset by peer", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize(("task", "args"), [("cl_noop", "n"), ("cl_add", "a")])
def test_a_submit_retried_after_a_lost_answer_makes_no_second_task(live_stack, task, args) -> None:
    marker = uuid.uuid4().int % 10**9
    transport = LoseFirstAnswer()
    with NeutrinoClient(live_stack.url, token=live_stack.token, transport=transport) as client:
        call = {"n": marker} if task == "cl_noop" else {"a": marker, "b": 0}
        handle = client.call_async(task, **call)
        assert handle.wait(timeout=60) == marker
        assert transport.posts == 2 and transport.keys[0] == transport.keys[1] is not None
        assert tasks_with(client, task, **{args: marker}) == [handle.id], "the retry made no second task"


# --- tokens, limits, an unreachable server ---------------------------------------------------------


def test_calls_without_a_valid_token_are_unauthorized(live_stack) -> None:
    with NeutrinoClient(live_stack.url) as anonymous, pytest.raises(Unauthorized, match="needs a token"):
        anonymous.call_sync("cl_add", a=1, b=1)
    with NeutrinoClient(live_stack.url, token="ntr_wrong") as wrong, pytest.raises(Unauthorized, match="not valid"):
        wrong.list_tasks()
    name = f"short-lived-{uuid.uuid4().hex[:6]}"
    token = live_stack.cli("token", "create", name).stdout.strip()
    with NeutrinoClient(live_stack.url, token=token) as client:
        assert client.call_sync("cl_add", a=1, b=1) == 2
        assert name in live_stack.cli("token", "list").stdout
        live_stack.cli("token", "revoke", name)
        with pytest.raises(Unauthorized, match="revoked"):
            client.call_sync("cl_add", a=1, b=1)


def test_a_full_pool_raises_overloaded_with_retry_after(neutrino_client) -> None:
    # Pool cl_full has max_backlog 2 and no worker.
    accepted = []
    with pytest.raises(Overloaded) as caught:
        for n in range(3):
            accepted.append(neutrino_client.call_async("cl_full", n=n))
    assert len(accepted) == 2 and caught.value.retry_after >= 1 and caught.value.status_code == 429
    assert "pool cl_full is full" in str(caught.value)
    with pytest.raises(Overloaded):
        neutrino_client.submit_many("cl_full", [{"n": 9}])
    for handle in accepted:
        handle.cancel()
    assert neutrino_client.call_async("cl_full", n=3).cancel().status == "cancelled", "room again"


def test_the_rate_limit_raises_overloaded(live_stack) -> None:
    url = live_stack.start_http({"NEUTRINO_RATE_LIMIT_PER_S": "0.01", "NEUTRINO_RATE_LIMIT_BURST": "2"})
    with NeutrinoClient(url, token=live_stack.token) as client:
        client.list_tasks(limit=1)
        client.list_tasks(limit=1)
        with pytest.raises(Overloaded, match="rate limit") as caught:
            client.list_tasks(limit=1)
        assert caught.value.retry_after >= 1


def test_an_unreachable_server_is_gateway_unavailable() -> None:
    from workers.engine.nats_server import free_port

    client = NeutrinoClient(f"http://127.0.0.1:{free_port()}", submit_retries=1, timeout=5)
    with client, pytest.raises(GatewayUnavailable, match="cannot reach") as caught:
        client.call_sync("cl_add", a=1, b=1)
    assert isinstance(caught.value, NeutrinoClientError) and "call_sync(cl_add(a=1, b=1))" in str(caught.value)


# --- asyncio ---------------------------------------------------------------------------------------


def test_the_asyncio_client(live_stack) -> None:
    async def main() -> None:
        async with AsyncNeutrinoClient(live_stack.url, token=live_stack.token) as client:
            assert await client.call_sync("cl_add", a=2, b=2) == 4
            handle = await client.call_async("cl_async_add", a=3, b=4)
            assert await handle.wait(timeout=60) == 7 and await handle.status() == "completed"
            handles = await client.submit_many("cl_noop", [{"n": i} for i in range(5)])
            assert await asyncio.gather(*(h.wait(timeout=60) for h in handles)) == list(range(5))
            failing = await client.call_async("cl_async_fail", message="async")
            with pytest.raises(TaskFailed, match="async"):
                await failing.wait(timeout=60)
            retried = await failing.retry()
            assert retried.id != failing.id
            with pytest.raises(TaskNotFound):
                await client.get_task(str(uuid.uuid4()))
            seen = [t.id async for t in client.iter_tasks(function="cl_async_fail", page_size=2)]
            assert failing.id in seen

    asyncio.run(main())


def test_wait_backs_off_when_the_server_grants_no_long_poll(live_stack) -> None:
    """A long-poll refused at once (`X-Neutrino-Wait: not-granted`) is asked again after its Retry-After."""
    url = live_stack.start_http({"NEUTRINO_LONG_POLL_MAX": "0"})
    with NeutrinoClient(url, token=live_stack.token, timeout=30.0) as client:
        task = client.submit("cl_async_sleep", {"seconds": 20})
        with pytest.raises(TaskTimeout):
            task.wait(timeout=3)
        client.cancel(task.id)
    metrics = httpx.get(f"{url}/metrics", params={"scope": "process"}, timeout=10).text
    polls = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                if line.startswith("neutrino_http_request_duration_seconds_count") and 'method="GET"' in line
                and "task_id" in line)
    assert 1 <= polls <= 6, f"{polls:g} polls in 3 s: the client did not wait between refused long-polls"
