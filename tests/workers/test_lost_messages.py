"""A queued task whose message the broker lost (a nats-server killed before its store reached the disk)
is published again by the autoscaler's step once its pool's consumer holds nothing; a task whose message
is only waiting (a retry's backoff) is left alone. A real nats-server and real worker processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import nats.js.errors
import pytest
from django.utils import timezone
from nats.aio.client import Client
from nats.js import JetStreamContext

from pools_app.autoscaler.loop import read_depths, republish_lost
from tasks_app.models import Task
from tests.servers import wait_for
from tests.workers.test_nats_worker import nats_call, submit, wait_status
from workers.engine.broker.bridge import NatsBridge
from workers.engine.topology import STREAM

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


@pytest.fixture
def bridge(live_nats) -> Iterator[NatsBridge]:
    """A connection as the autoscaler's; the stream is emptied before and after each test, so no message
    of another test counts in a depth here, and no retry waiting here (a minute) is left to the next tests."""
    purge_stream(live_nats.url)
    bridge = NatsBridge(live_nats.url, name="test-autoscaler").start()
    yield bridge
    bridge.close()
    purge_stream(live_nats.url)


def purge_stream(url: str) -> None:
    async def purge(nc: Client, js: JetStreamContext) -> None:
        try:
            await js.purge_stream(STREAM)
        except nats.js.errors.NotFoundError:
            pass

    nats_call(url, purge)


def test_a_queued_task_whose_message_was_lost_runs_once_after_the_pool_drains(default_pools, start_worker, bridge,
                                                                             tmp_path) -> None:
    start_worker("async")  # its consumer exists and holds nothing
    marker = tmp_path / "runs"
    # What a broker crash leaves: the row says queued (its publish was acknowledged), the stream has no message.
    row = Task.objects.create(function_name="wk_flaky", status="queued", pool="async", execution_mode="async",
                              created_at=timezone.now() - timedelta(seconds=60),
                              queued_at=timezone.now() - timedelta(seconds=60), timeout_ms=10_000, max_retries=3,
                              args={"counter_path": str(marker), "fail_times": 0})

    depths = read_depths(bridge, ["async"])
    assert depths is not None and depths["async"].pending == 0 and depths["async"].in_flight == 0
    assert republish_lost(bridge, depths, older_than_s=1.0) == 1

    done = wait_status(str(row.id), "completed")
    assert done.attempt == 1 and done.result == {"runs": 1}
    assert marker.read_text() == "1", "the task ran once"
    depths = read_depths(bridge, ["async"])
    assert depths is not None
    assert republish_lost(bridge, depths, older_than_s=0.0) == 0, "a finished task is never published again"


def test_a_recently_queued_task_is_not_taken_for_lost(default_pools, start_worker, bridge) -> None:
    start_worker("async")
    row = Task.objects.create(function_name="wk_add", status="queued", pool="async", execution_mode="async",
                              created_at=timezone.now(), queued_at=timezone.now(), timeout_ms=10_000,
                              args={"a": 1, "b": 2})
    depths = read_depths(bridge, ["async"])
    assert depths is not None
    assert republish_lost(bridge, depths, older_than_s=30.0) == 0
    assert Task.objects.get(id=row.id).status == "queued"


def test_a_task_waiting_for_its_retry_keeps_its_one_message(client, default_pools, start_worker, bridge,
                                                             tmp_path) -> None:
    # The first run fails; the retry waits 60 s in the consumer (a nak with a delay) while the row says queued.
    start_worker("async", env={"NEUTRINO_RETRY_BACKOFF_S": "60", "NEUTRINO_RETRY_BACKOFF_MAX_S": "60"})
    marker = tmp_path / "runs"
    task_id = submit(client, "wk_flaky", counter_path=str(marker), fail_times=1)
    wait_for(lambda: Task.objects.filter(id=task_id, status="queued", attempt=1).exclude(error="").exists(),
             what="the first attempt to fail and wait for its retry")

    depths = read_depths(bridge, ["async"])
    assert depths is not None
    assert depths["async"].in_flight == 1, "the retry's message stays in flight while it waits"
    assert republish_lost(bridge, depths, older_than_s=0.0) == 0
    row = Task.objects.get(id=task_id)
    assert row.status == "queued" and row.attempt == 1
    assert marker.read_text() == "1", "nothing ran it again"
