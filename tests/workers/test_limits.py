"""Concurrency per key and rate limits, end to end: the HTTP API in this process, a real nats-server, several
real worker processes sharing this test's database. The tasks write when they start and end
(tests/fixtures/limit_tasks.py), so what ran at once is counted from what ran, not from what the rows say.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tasks_app.models import RateBucket, Task
from tests.fixtures.limit_tasks import starts_and_ends
from tests.servers import wait_for
from tests.workers.test_nats_worker import ensure_topology

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]


def submit_batch(client: Any, task: str, items: list[dict[str, Any]]) -> list[str]:
    response = client.post(f"/api/{task}/batch", {"items": [{"args": args} for args in items]},
                           content_type="application/json")
    assert response.status_code == 202, response.content
    return [item["task_id"] for item in response.json()["items"]]


def most_at_once(log_path: Path) -> dict[str, int]:
    """Per key (the part of a label before "/"), the most runs that were between their start and end at once."""
    running: dict[str, int] = defaultdict(int)
    most: dict[str, int] = defaultdict(int)
    # An end and a start at the same instant: the end first (the slot was free again).
    for what, label, _ in sorted(starts_and_ends(log_path), key=lambda row: (row[2], row[0] == "start")):
        key = label.split("/")[0]
        running[key] += 1 if what == "start" else -1
        most[key] = max(most[key], running[key])
    return dict(most)


def all_finished(ids: list[str]) -> bool:
    return Task.objects.filter(id__in=ids, status__in=["completed", "failed"]).count() == len(ids)


def test_at_most_two_per_key_across_workers_and_a_busy_key_does_not_starve_a_quiet_one(
        client, default_pools, live_nats, start_worker, tmp_path):
    ensure_topology(live_nats.url)
    workers = [start_worker("async", concurrency=3), start_worker("async", concurrency=3)]
    log = tmp_path / "runs.log"

    busy = submit_batch(client, "lim_per_customer", [
        {"customer_id": "busy", "log_path": str(log), "label": f"busy/{n}", "seconds": 0.05} for n in range(100)])
    quiet = submit_batch(client, "lim_per_customer", [
        {"customer_id": "quiet", "log_path": str(log), "label": f"quiet/{n}", "seconds": 0.05} for n in range(2)])
    # Failures free their slot too: with two slots, three failing tasks and three good ones all end.
    failing = submit_batch(client, "lim_per_customer", [
        {"customer_id": "failing", "log_path": str(log), "label": f"failing/{n}", "seconds": 0.05, "fail": n < 3}
        for n in range(6)])
    everything = busy + quiet + failing

    wait_for(lambda: all_finished(everything), timeout_s=180, what="all 108 tasks to end")

    most = most_at_once(log)
    # Six slots, never more than two per key; the busy key filled its two (the quiet one may have run its
    # two one after the other, and the failing one too, on a loaded machine).
    assert set(most) == {"busy", "quiet", "failing"} and max(most.values()) == 2 and most["busy"] == 2, most
    rows = list(Task.objects.filter(id__in=everything))
    assert {row.status for row in rows if row.id.hex in {i.replace("-", "") for i in failing[:3]}} == {"failed"}
    assert sum(row.status == "completed" for row in rows) == 105
    # Waiting for a slot spent no attempt (each task ran once), and every row says its key.
    assert {row.attempt for row in rows} == {1}
    assert {row.concurrency_key for row in rows} == {"busy", "quiet", "failing"}
    assert len(starts_and_ends(log)) == 2 * 108  # each ran exactly once
    assert {row.worker_id for row in rows} == {worker.worker_id for worker in workers}
    # Fairness: the quiet customer's two tasks, queued behind the busy one's hundred, were done while
    # most of the busy customer's tasks had not started yet.
    quiet_done = max(at for what, label, at in starts_and_ends(log) if what == "end" and label.startswith("quiet/"))
    busy_later = sum(1 for what, label, at in starts_and_ends(log)
                     if what == "start" and label.startswith("busy/") and at > quiet_done)
    assert busy_later >= 50, f"only {busy_later} of the busy customer's 100 tasks started after the quiet one's"


def test_rate_limit_holds_for_the_cluster_and_tasks_over_it_wait(client, default_pools, live_nats, start_worker,
                                                                 tmp_path):
    ensure_topology(live_nats.url)
    start_worker("async", concurrency=3)
    start_worker("async", concurrency=3)
    log = tmp_path / "runs.log"

    ids = submit_batch(client, "lim_rated", [{"log_path": str(log), "label": f"r{n}"} for n in range(15)])

    wait_for(lambda: all_finished(ids), timeout_s=120, what="the 15 rated tasks to end")
    rows = list(Task.objects.filter(id__in=ids))
    assert {row.status for row in rows} == {"completed"}  # over the rate they waited, none failed
    assert {row.attempt for row in rows} == {1}
    assert len(starts_and_ends(log)) == 15
    # 5/s with bursts of 5: the k-th start (from 0) comes no sooner than (k - 4) fifths of a second after
    # the first. The start is the claim's time, read a moment before the rate row is (hence 30 ms).
    started = sorted(row.started_at.timestamp() for row in rows if row.started_at is not None)
    early = [(k, round(at - started[0], 3)) for k, at in enumerate(started) if at - started[0] < (k - 4) * 0.2 - 0.03]
    assert not early, f"starts sooner than 5/s allows: {early}"
    assert RateBucket.objects.filter(function_name="lim_rated", key="").count() == 1


def test_the_slots_of_a_killed_worker_come_back(client, default_pools, live_nats, start_worker, tmp_path):
    ensure_topology(live_nats.url)
    doomed = start_worker("async", concurrency=2)
    log = tmp_path / "runs.log"
    held = submit_batch(client, "lim_per_customer", [
        {"customer_id": "k", "log_path": str(log), "label": f"k/held{n}", "seconds": 3.0} for n in range(2)])
    wait_for(lambda: Task.objects.filter(id__in=held, status="running").count() == 2, what="both slots taken")
    doomed.kill()  # its rows stay running: they hold the key's two slots until their messages come back
    survivor = start_worker("async", concurrency=2)
    later = submit_batch(client, "lim_per_customer", [
        {"customer_id": "k", "log_path": str(log), "label": f"k/later{n}", "seconds": 0.05} for n in range(2)])

    wait_for(lambda: all_finished(held + later), timeout_s=120, what="the held and the later tasks to end")
    rows = {str(row.id): row for row in Task.objects.filter(id__in=held + later)}
    assert {rows[i].status for i in held + later} == {"completed"}
    # The killed worker's deliveries came back after ack_wait and took their own rows (and slots) over.
    assert {(rows[i].attempt, rows[i].worker_id) for i in held} == {(2, survivor.worker_id)}
    assert {rows[i].attempt for i in later} == {1}


def test_a_task_waiting_for_its_key_is_queued_and_can_be_cancelled(client, default_pools, live_nats, start_worker,
                                                                     tmp_path):
    ensure_topology(live_nats.url)
    start_worker("async", concurrency=3)
    log = tmp_path / "runs.log"
    held = submit_batch(client, "lim_per_customer", [
        {"customer_id": "k", "log_path": str(log), "label": f"k/held{n}", "seconds": 4.0} for n in range(2)])
    wait_for(lambda: Task.objects.filter(id__in=held, status="running").count() == 2, what="both slots taken")
    [waiting] = submit_batch(client, "lim_per_customer", [
        {"customer_id": "k", "log_path": str(log), "label": "k/waiting", "seconds": 0.05}])

    # Offered to the worker and refused several times (a free slot of the worker, none of the key):
    # the caller sees it queued, not failed, with its key.
    # (The ledger writes the submitted row `queued` off the request path: the worker may try it first.)
    wait_for(lambda: Task.objects.filter(id=waiting, concurrency_key="k", status="queued").exists(),
             what="the worker to try it, and the ledger to have written it queued")
    shown = client.get(f"/tasks/{waiting}").json()
    assert (shown["status"], shown["attempt"], shown["concurrency_key"]) == ("queued", 0, "k")
    assert client.delete(f"/tasks/{waiting}").status_code == 200

    wait_for(lambda: all_finished(held), timeout_s=60, what="the held tasks to end")
    assert Task.objects.get(id=waiting).status == "cancelled"
    assert [label for what, label, _ in starts_and_ends(log) if what == "start"].count("k/waiting") == 0
