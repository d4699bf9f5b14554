"""Priorities with a real worker process, a real nats-server and the API in this process.

The tasks append their tag to a file as they start, so the order read is the order they really started in.
No assertion on wall time: on the order of starts, and on counts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from nats.js.errors import NotFoundError

from tasks_app.models import Task
from tests.servers import wait_for
from tests.workers.test_lost_messages import purge_stream
from tests.workers.test_nats_worker import ensure_topology, nats_call
from workers.engine.topology import STREAM, consumer_name

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

LOW = 600  # the 10,000 takes minutes on 2 cores: bench/priorities.py measures that one
HIGH = 100
CONCURRENCY = 2


@pytest.fixture
def empty_stream(live_nats, default_pools) -> Iterator[str]:
    ensure_topology(live_nats.url)
    purge_stream(live_nats.url)
    yield live_nats.url
    purge_stream(live_nats.url)


def post(client, path: str, body: dict, status: int = 202) -> dict:
    response = client.post(path, json.dumps(body), content_type="application/json")
    assert response.status_code == status, response.content
    return response.json()


def started(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def test_high_tasks_queued_behind_a_low_backlog_start_before_the_rest_of_it(client, empty_stream, start_worker,
                                                                               tmp_path) -> None:
    log = tmp_path / "starts.log"
    low = post(client, "/api/wk_mark/batch", {
        "priority": "low",
        "items": [{"args": {"log_path": str(log), "tag": f"low-{i}", "sleep_s": 0.01}} for i in range(LOW)],
    })["items"]
    assert len(low) == LOW and {item["status"] for item in low} == {"queued"}
    start_worker("async", concurrency=CONCURRENCY)
    wait_for(lambda: len(started(log)) >= 20, timeout_s=60, what="the worker to start on the low backlog")

    high = post(client, "/api/wk_mark/batch", {
        "priority": "high",
        "items": [{"args": {"log_path": str(log), "tag": f"high-{i}"}} for i in range(HIGH)],
    })["items"]
    lows_before_high = sum(tag.startswith("low-") for tag in started(log))
    wait_for(lambda: sum(tag.startswith("high-") for tag in started(log)) == HIGH, timeout_s=120,
             what="every high task to start")

    order = started(log)
    last_high = max(index for index, tag in enumerate(order) if tag.startswith("high-"))
    lows_overtaken = sum(tag.startswith("low-") for tag in order[:last_high]) - lows_before_high
    # What a worker took before it heard of the high tasks: a fetch in flight per slot, and a few more.
    print(f"{lows_before_high} low tasks had started when the high ones were queued; {lows_overtaken} more "
          f"started before the last high one")
    assert lows_overtaken <= 2 * CONCURRENCY + 6, (lows_overtaken, order[:last_high + 1])
    assert LOW - lows_before_high - lows_overtaken > 100  # a real backlog was still waiting: it waited
    # Each task started once, at the level it was sent with.
    assert len(set(order)) == len(order)
    assert set(Task.objects.filter(id__in=[i["task_id"] for i in high]).values_list("priority", flat=True)) == {"high"}
    assert set(Task.objects.filter(id__in=[i["task_id"] for i in low]).values_list("priority", flat=True)) == {"low"}


def test_priority_from_the_decorator_or_the_submit_shown_in_the_api_and_run(client, empty_stream, start_worker,
                                                                           tmp_path) -> None:
    log = tmp_path / "starts.log"
    urgent = post(client, "/api/wk_mark_urgent", {"args": {"log_path": str(log), "tag": "urgent"}})
    lowered = post(client, "/api/wk_mark_urgent", {"args": {"log_path": str(log), "tag": "lowered"},
                                                   "priority": "low"})
    plain = post(client, "/api/wk_mark", {"args": {"log_path": str(log), "tag": "plain"}})
    bad = post(client, "/api/wk_mark", {"args": {"log_path": str(log), "tag": "x"}, "priority": "urgent"}, 422)
    assert [f["field"] for f in bad["fields"]] == ["priority"], bad

    def depth(level: str) -> int:
        async def pending(nc, js) -> int:
            return int((await js.consumer_info(STREAM, consumer_name("async", level))).num_pending or 0)
        return nats_call(empty_stream, pending)

    start_worker("async", concurrency=1)
    wait_for(lambda: sorted(started(log)) == ["lowered", "plain", "urgent"], timeout_s=60, what="all three to run")
    shown = {name: client.get(f"/tasks/{body['task_id']}").json()
             for name, body in (("urgent", urgent), ("lowered", lowered), ("plain", plain))}
    assert {name: task["priority"] for name, task in shown.items()} == {
        "urgent": "high", "lowered": "low", "plain": "normal"}
    assert {task["status"] for task in shown.values()} == {"completed"}
    # Queued before the worker started, they ran highest first; no message is left at any level.
    assert started(log) == ["urgent", "plain", "lowered"]
    assert [depth(level) for level in ("high", "normal", "low")] == [0, 0, 0]


def delivered(url: str) -> dict[str, int]:
    """How many messages each level's consumer of the async pool has delivered so far (0: no consumer yet)."""
    async def read(nc, js) -> dict[str, int]:
        counts = {}
        for level in ("high", "normal", "low"):
            try:
                info = await js.consumer_info(STREAM, consumer_name("async", level))
            except NotFoundError:
                counts[level] = 0
                continue
            counts[level] = int(info.delivered.consumer_seq or 0)
        return counts
    return nats_call(url, read)


def test_the_sweeper_publishes_a_row_the_broker_never_confirmed_at_its_own_level(client, empty_stream, start_worker,
                                                                                 tmp_path) -> None:
    log = tmp_path / "starts.log"
    task = Task.objects.create(function_name="wk_mark", status="pending", pool="async", execution_mode="async",
                               created_at=timezone.now() - timedelta(seconds=30), timeout_ms=10_000,
                               args={"log_path": str(log), "tag": "swept"}, priority="high")
    before = delivered(empty_stream)
    start_worker("async", concurrency=1)  # its sweeper (NEUTRINO_SWEEP_AFTER_S=1) republishes the row
    wait_for(lambda: Task.objects.get(id=task.id).status == "completed", timeout_s=60, what="the swept task to run")
    after = delivered(empty_stream)
    assert started(log) == ["swept"]
    assert {level: after[level] - before[level] for level in after} == {"high": 1, "normal": 0, "low": 0}
